/* core/daemon/tlsrpt.c — SMTP TLS Reporting (RFC 8460) for delivery; the
 * contract is in daemon.h, the data and the report in policy/tlsrpt.h.
 *
 * Flow:
 *   tlsrpt_note (delivery, any worker): the session's policy type (tlsa,
 *     sts, no-policy-found) and outcome (success, or a §4.3 result type
 *     with its details) go into the worker's aggregate of this period;
 *   tlsrpt_tick (every worker, each second): a period that ended is handed
 *     to the hub (one pointer under the hub's mutex);
 *   worker 0's tick: once every worker handed over (or TLSRPT_GRACE_MS
 *     passed), it merges them and starts a report run: the TXT record of
 *     _smtp._tls.<domain> for each domain (at most TLSRPT_MAX_LOOKUPS at
 *     once), and for each valid record a report message to its mailto:
 *     URIs, queued in worker 0's spool (https: URIs are not posted to).
 *     A domain without a record, with an invalid one, or whose lookup
 *     failed, is dropped (counted, not retried).
 *
 * The report goes out from postmaster@<hostname> (contact-info too), a
 * sender bounces can reach, with no NOTIFY: so a rua mailbox that fails
 * for good tells the postmaster. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "core/netaddr.h"
#include "policy/mta_sts.h"

#define TLSRPT_GRACE_MS 10000  /* worker 0 waits this long for hand-overs */
#define TLSRPT_MAX_LOOKUPS 8   /* TXT lookups of a report run at once */
#define TLSRPT_MAX_HANDED 256  /* aggregates waiting in the hub */
#define TLSRPT_TLSA_BYTES 1000 /* of a TLSA record's data shown in hex */
#define TLSRPT_STS_LINES (MTA_STS_MAX_MX + 4)

_Static_assert(sizeof(((struct worker_metrics *)0)->tlsrpt_dropped) /
                       sizeof(uint64_t) ==
                   TLSRPT_DROP_COUNT,
               "one counter per tlsrpt_drop");
_Static_assert(sizeof(((struct worker_metrics *)0)->tlsrpt_reports) /
                       sizeof(uint64_t) ==
                   TLSRPT_OUT_COUNT,
               "one counter per tlsrpt_outcome");
_Static_assert(TLSRPT_STS_LINES <= TLSRPT_MAX_STRINGS, "sts lines fit");
_Static_assert(TLSRPT_MAX_URIS <= REPORT_MAX_RCPTS, "rua URIs fit");

/* The daemon's hand-over point: finished periods, under mu. */
struct tlsrpt_hub {
  pthread_mutex_t mu;
  struct tlsrpt_agg *aggs[TLSRPT_MAX_HANDED];
  size_t num_aggs;
  unsigned num_handed; /* hand-overs since worker 0 last took them */
  int64_t first_ms;    /* when the first of them came; 0: none */
};

struct rpt_lookup {
  struct rpt_lookup *next, *prev;
  struct worker *w;
  size_t index; /* the domain in the run's aggregate */
  uint64_t handle;
};

/* Worker 0's report run over one merged aggregate. */
struct rpt_run {
  struct tlsrpt_agg *agg;
  size_t next; /* the next domain to look up */
  unsigned in_flight;
  struct rpt_lookup *lookups; /* in flight */
  uint64_t queued;
};

struct tlsrpt_worker {
  struct tlsrpt_agg *agg;       /* this period's sessions, or NULL */
  int64_t period_end_s;         /* 0: no period started */
  struct tlsrpt_agg_stats seen; /* agg's stats already in the metrics */
  struct rpt_run *run;          /* worker 0: the run in progress */
};

/* ---- set-up ---- */

int tlsrpt_init(struct daemon *d) {
  d->tlsrpt = calloc(1, sizeof(*d->tlsrpt));
  if (d->tlsrpt == NULL) {
    return -1;
  }
  pthread_mutex_init(&d->tlsrpt->mu, NULL);
  return 0;
}

void tlsrpt_free(struct daemon *d) {
  struct tlsrpt_hub *hub = d->tlsrpt;
  if (hub == NULL) {
    return;
  }
  for (size_t i = 0; i < hub->num_aggs; i++) {
    tlsrpt_agg_free(hub->aggs[i]);
  }
  pthread_mutex_destroy(&hub->mu);
  free(hub);
  d->tlsrpt = NULL;
}

static struct tlsrpt_worker *tw_get(struct worker *w) {
  if (w->tlsrpt == NULL) {
    w->tlsrpt = calloc(1, sizeof(*w->tlsrpt));
  }
  return w->tlsrpt;
}

static void run_free(struct worker *w, struct rpt_run *run) {
  while (run->lookups != NULL) {
    struct rpt_lookup *lk = run->lookups;
    run->lookups = lk->next;
    if (w->dns != NULL) {
      dns_cancel(w->dns, lk->handle);
    }
    free(lk);
  }
  tlsrpt_agg_free(run->agg);
  free(run);
}

void tlsrpt_worker_free(struct worker *w) {
  struct tlsrpt_worker *tw = w->tlsrpt;
  if (tw == NULL) {
    return;
  }
  if (tw->run != NULL) {
    run_free(w, tw->run);
  }
  tlsrpt_agg_free(tw->agg);
  free(tw);
  w->tlsrpt = NULL;
}

/* stats_sync adds what agg dropped since `seen` to w's counters. */
static void stats_sync(struct worker *w, const struct tlsrpt_agg *agg,
                       struct tlsrpt_agg_stats *seen) {
  struct tlsrpt_agg_stats st;
  tlsrpt_agg_get_stats(agg, &st);
  METRIC_ADD(w->m.tlsrpt_dropped[TLSRPT_DROP_DOMAIN],
             st.dropped_domain - seen->dropped_domain);
  METRIC_ADD(w->m.tlsrpt_dropped[TLSRPT_DROP_POLICY],
             st.dropped_policy - seen->dropped_policy);
  METRIC_ADD(w->m.tlsrpt_dropped[TLSRPT_DROP_DETAIL],
             st.dropped_rows - seen->dropped_rows);
  METRIC_ADD(w->m.tlsrpt_dropped[TLSRPT_DROP_MEMORY],
             st.dropped_nomem - seen->dropped_nomem);
  *seen = st;
}

/* ---- periods and the hand-over ---- */

/* hand_over gives the worker's aggregate (maybe none) to the hub: the
 * period ended. Past TLSRPT_MAX_HANDED waiting (worker 0 busy for many
 * periods), it is merged into the last one, here. */
static void hand_over(struct worker *w, struct tlsrpt_worker *tw) {
  struct tlsrpt_hub *hub = w->d->tlsrpt;
  struct tlsrpt_agg *agg = tw->agg;
  tw->agg = NULL;
  tw->seen = (struct tlsrpt_agg_stats){0};
  __atomic_store_n(&w->m.tlsrpt_domains, 0, __ATOMIC_RELAXED);
  pthread_mutex_lock(&hub->mu);
  if (agg != NULL && hub->num_aggs < TLSRPT_MAX_HANDED) {
    hub->aggs[hub->num_aggs++] = agg;
    agg = NULL;
  } else if (agg != NULL) {
    struct tlsrpt_agg *last = hub->aggs[hub->num_aggs - 1];
    struct tlsrpt_agg_stats before;
    tlsrpt_agg_get_stats(last, &before);
    tlsrpt_agg_merge(last, agg);
    stats_sync(w, last, &before);
  }
  hub->num_handed++;
  if (hub->first_ms == 0) {
    hub->first_ms = w->now_ms;
  }
  pthread_mutex_unlock(&hub->mu);
  tlsrpt_agg_free(agg);
}

/* period_roll: the period ends at a multiple of tls.report_interval
 * seconds since the epoch (UTC midnight for a day); once it is over, the
 * worker's counts go to the hub. */
static void period_roll(struct worker *w, struct tlsrpt_worker *tw) {
  int64_t now_s = w->now_ms / 1000;
  int64_t len = w->cfg->tls_report_interval;
  if (tw->period_end_s != 0 && now_s < tw->period_end_s) {
    return;
  }
  if (tw->period_end_s != 0) {
    hand_over(w, tw);
  }
  tw->period_end_s = now_s - now_s % len + len;
}

/* ---- sessions ---- */

/* sts_fetch_result: which §4.3 failure an MTA-STS "none" answer was; -1
 * if it was no failed fetch (no record, a fetch that failed recently and
 * was not tried again). The detail is mtasts.c's. */
static int sts_fetch_result(const char *detail, enum tlsrpt_result *out) {
  if (detail == NULL || strncmp(detail, "policy fetch failed", 19) != 0) {
    return -1;
  }
  if (strstr(detail, "invalid policy") != NULL) {
    *out = TLSRPT_STS_POLICY_INVALID;
  } else if (strstr(detail, "certificate not verified") != NULL) {
    *out = TLSRPT_STS_WEBPKI_INVALID;
  } else {
    *out = TLSRPT_STS_POLICY_FETCH_ERROR;
  }
  return 1;
}

/* sess_outcome: 0 a successful session, 1 a failed one (*out), -1 none
 * to count (a plaintext session nobody asked TLS of). */
static int sess_outcome(const struct tlsrpt_sess *s, enum tlsrpt_result *out) {
  switch (s->event) {
  case TLSRPT_EV_TLS_READY: {
    /* What the policy asked of the certificate: DANE, PKIX (MTA-STS, or
     * the verify level), or nothing (opportunistic, encrypt). */
    enum tls_verify_result want =
        s->level == CONFIG_TLS_DANE               ? TLS_VERIFY_DANE_OK
        : s->sts || s->level == CONFIG_TLS_VERIFY ? TLS_VERIFY_OK
                                                  : TLS_VERIFY_NONE;
    if (want == TLS_VERIFY_NONE || s->verify == want) {
      return 0;
    }
    *out = tlsrpt_classify_verify(s->verify_error, s->level == CONFIG_TLS_DANE);
    return 1;
  }
  case TLSRPT_EV_TLS_ERROR:
  case TLSRPT_EV_STS_NO_MX:
    *out = TLSRPT_VALIDATION_FAILURE;
    return 1;
  case TLSRPT_EV_NO_STARTTLS:
    *out = TLSRPT_STARTTLS_NOT_SUPPORTED;
    return 1;
  case TLSRPT_EV_PLAINTEXT:
    if (s->level == CONFIG_TLS_NONE) {
      return -1;
    }
    *out = TLSRPT_STARTTLS_NOT_SUPPORTED;
    return 1;
  case TLSRPT_EV_TLSA_FAILED:
    *out = TLSRPT_DNSSEC_INVALID; /* §4.3.2.1: no valid records came */
    return 1;
  case TLSRPT_EV_STS_FETCH:
    return sts_fetch_result(s->reason, out);
  }
  return -1;
}

/* Text of a policy (§4.3 policy-string, mx-host), built for one call. */
struct policy_text {
  const char *strings[TLSRPT_MAX_STRINGS];
  const char *mx[TLSRPT_MAX_STRINGS];
  char sts[TLSRPT_STS_LINES][MTA_STS_MAX_NAME + 32];
  char *tlsa; /* TLSA lines, one allocation */
};

/* policy_sts: the policy's lines as the file has them (§4.3: "the
 * policy-string is the policy as text"), rebuilt from what was parsed
 * (extension fields are not kept); mx-host: its patterns. */
static void policy_sts(struct policy_text *t, struct tlsrpt_policy *p,
                       const struct mta_sts_policy *sp) {
  size_t n = 0;
  snprintf(t->sts[n++], sizeof(t->sts[0]), "version: STSv1");
  snprintf(t->sts[n++], sizeof(t->sts[0]), "mode: %s",
           mta_sts_mode_name(sp->mode));
  for (size_t i = 0; i < sp->num_mx && n + 1 < TLSRPT_STS_LINES; i++) {
    snprintf(t->sts[n++], sizeof(t->sts[0]), "mx: %s",
             mta_sts_policy_mx(sp, i));
    t->mx[p->num_mx_hosts++] = mta_sts_policy_mx(sp, i);
  }
  snprintf(t->sts[n++], sizeof(t->sts[0]), "max_age: %u", sp->max_age);
  for (size_t i = 0; i < n; i++) {
    t->strings[i] = t->sts[i];
  }
  p->num_strings = n;
}

/* policy_tlsa: the TLSA records in presentation form ("3 1 1 <hex>",
 * the data cut at TLSRPT_TLSA_BYTES); mx-host: the host they are for. */
static void policy_tlsa(struct policy_text *t, struct tlsrpt_policy *p,
                        const struct tlsrpt_sess *s) {
  size_t line = 16 + 2 * TLSRPT_TLSA_BYTES;
  size_t n = s->num_tlsa < TLS_MAX_TLSA ? s->num_tlsa : TLS_MAX_TLSA;
  t->tlsa = n > 0 ? malloc(n * line) : NULL;
  for (size_t i = 0; t->tlsa != NULL && i < n; i++) {
    const struct tls_tlsa *r = &s->tlsa[i];
    char *out = t->tlsa + i * line;
    int len = snprintf(out, line, "%u %u %u ", r->usage, r->selector, r->mtype);
    size_t bytes =
        r->data_len < TLSRPT_TLSA_BYTES ? r->data_len : TLSRPT_TLSA_BYTES;
    for (size_t k = 0; k < bytes; k++) {
      snprintf(out + len + 2 * k, 3, "%02X", r->data[k]);
    }
    t->strings[p->num_strings++] = out;
  }
  if (s->mx_host != NULL) {
    t->mx[p->num_mx_hosts++] = s->mx_host;
  }
}

/* sess_policy: the policy the session ran under (DANE wins, RFC 8461 §2). */
static void sess_policy(struct policy_text *t, struct tlsrpt_policy *p,
                        const struct tlsrpt_sess *s) {
  *p = (struct tlsrpt_policy){.strings = t->strings, .mx_hosts = t->mx};
  t->tlsa = NULL;
  if (s->dane) {
    p->type = TLSRPT_POLICY_TLSA;
    policy_tlsa(t, p, s);
  } else if (s->sts) {
    p->type = TLSRPT_POLICY_STS;
    if (s->sts_policy != NULL) {
      policy_sts(t, p, s->sts_policy);
    }
  } else {
    p->type = TLSRPT_POLICY_NONE;
  }
}

/* addr_text: an address without port, or "" (unknown). */
static void addr_text(const struct sockaddr_storage *ss, char *out,
                      size_t out_len) {
  out[0] = '\0';
  if (ss == NULL || (ss->ss_family != AF_INET && ss->ss_family != AF_INET6) ||
      sockaddr_format((const struct sockaddr *)ss, out, out_len) != 0) {
    out[0] = '\0';
  }
}

/* sending_ip: our side of the connection. */
static void sending_ip(int fd, char *out, size_t out_len) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  out[0] = '\0';
  if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
    addr_text(&ss, out, out_len);
  }
}

/* agg_current: the worker's aggregate of this period, made on first use. */
static struct tlsrpt_agg *agg_current(struct worker *w,
                                      struct tlsrpt_worker *tw) {
  period_roll(w, tw);
  if (tw->agg == NULL) {
    struct tlsrpt_limits lim = {
        .max_domains = w->cfg->tls_report_max_domains,
        .max_failure_rows = w->cfg->tls_report_max_failure_details,
    };
    tw->agg = tlsrpt_agg_new(
        &lim, tw->period_end_s - w->cfg->tls_report_interval, tw->period_end_s);
    tw->seen = (struct tlsrpt_agg_stats){0};
  }
  return tw->agg;
}

void tlsrpt_note(struct worker *w, const struct tlsrpt_sess *s) {
  enum tlsrpt_result res = TLSRPT_VALIDATION_FAILURE;
  struct tlsrpt_worker *tw;
  struct tlsrpt_agg *agg;
  int failed = sess_outcome(s, &res);
  if (!w->cfg->tls_reports || failed < 0 || s->domain == NULL ||
      !mta_sts_domain_valid(s->domain) || (tw = tw_get(w)) == NULL ||
      (agg = agg_current(w, tw)) == NULL) {
    return;
  }
  struct policy_text text;
  struct tlsrpt_policy p;
  sess_policy(&text, &p, s);
  char src[64], dst[64];
  sending_ip(s->fd, src, sizeof(src));
  addr_text(s->peer, dst, sizeof(dst));
  const char *reason = s->reason;
  if (s->event == TLSRPT_EV_TLS_READY) {
    reason = s->verify_error;
  } else if (reason == NULL && s->event == TLSRPT_EV_PLAINTEXT) {
    reason = "STARTTLS not offered or refused: sent without TLS";
  }
  struct tlsrpt_failure f = {res, src, s->mx_host, dst, reason};
  if (tlsrpt_agg_add(agg, s->domain, &p, failed ? &f : NULL) == 0) {
    METRIC_ADD(w->m.tlsrpt_sessions[failed], 1);
  }
  free(text.tlsa);
  stats_sync(w, agg, &tw->seen);
  __atomic_store_n(&w->m.tlsrpt_domains, tlsrpt_agg_num_domains(agg),
                   __ATOMIC_RELAXED);
}

/* ---- reports (worker 0) ---- */

/* report_stamp: "20240101T000000Z" of a period's start. */
static void report_stamp(char out[32], int64_t s) {
  time_t t = (time_t)s;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL ||
      strftime(out, 32, "%Y%m%dT%H%M%SZ", &tm) == 0) {
    snprintf(out, 32, "%lld", (long long)s);
  }
}

/* report_build makes domain i's message into data: the JSON report, its
 * gzip, the MIME message. 0 or -1. */
static int report_build(struct worker *w, const struct tlsrpt_agg *agg,
                        size_t i, const char *const *rcpts, size_t num_rcpts,
                        const char *contact, const char *qid, struct buf *data,
                        char *report_id, size_t report_id_len) {
  const char *host = w->cfg->hostname;
  int64_t start, end;
  char stamp[32];
  tlsrpt_agg_period(agg, &start, &end);
  report_stamp(stamp, start);
  snprintf(report_id, report_id_len, "%s.%s@%s", stamp, qid, host);
  struct tlsrpt_report_meta meta = {host, contact, report_id};
  struct buf json = {0}, gz = {0};
  int rc = -1;
  if (tlsrpt_report_json(&json, agg, i, &meta) == 0 &&
      tlsrpt_gzip(&gz, json.data, json.len, w->now_ms / 1000) == 0) {
    struct tlsrpt_message m = {
        .submitter = host,
        .from = contact,
        .domain = tlsrpt_agg_domain(agg, i),
        .report_id = report_id,
        .unique = qid,
        .rcpts = rcpts,
        .num_rcpts = num_rcpts,
        .now_s = w->now_ms / 1000,
        .start_s = start,
        .end_s = end > start ? end - 1 : end,
        .report_gz = gz.data,
        .report_gz_len = gz.len,
    };
    rc = tlsrpt_message_build(data, &m);
  }
  buf_free(&json);
  buf_free(&gz);
  return rc;
}

/* log_queued writes the one line of a report queued. */
static void log_queued(const struct rpt_run *run, size_t i, const char *qid,
                       const char *report_id, const char *to, size_t n) {
  uint64_t ok, failed;
  tlsrpt_agg_domain_sessions(run->agg, i, &ok, &failed);
  struct log_rec r;
  log_begin(&r, "tlsrpt_queued");
  log_str(&r, "qid", qid);
  log_str(&r, "domain", tlsrpt_agg_domain(run->agg, i));
  log_str(&r, "report_id", report_id);
  log_str(&r, "to", to);
  log_u64(&r, "nrcpt", n);
  log_u64(&r, "successful", ok);
  log_u64(&r, "failed", failed);
  log_end(&r);
}

int tlsrpt_spool_report(struct worker *w, uint64_t id, const char *sender,
                        const char *const *rcpts, size_t num_rcpts,
                        struct buf *data) {
  struct spool_rcpt to[REPORT_MAX_RCPTS];
  struct commit *cm = NULL;
  if (num_rcpts == 0 || num_rcpts > REPORT_MAX_RCPTS ||
      (cm = calloc(1, sizeof(*cm))) == NULL) {
    buf_free(data);
    return -1;
  }
  for (size_t k = 0; k < num_rcpts; k++) {
    to[k] = (struct spool_rcpt){.addr = rcpts[k]};
  }
  cm->data = *data;
  *data = (struct buf){0};
  struct spool_message sm = {
      .queue_id = id,
      .arrival_ms = w->now_ms,
      .sender = sender,
      .body_type = SMTP_BODY_7BIT,
      .client_addr = "local",
      .helo = "",
      .num_rcpts = num_rcpts,
      .rcpts = to,
      .body = cm->data.data,
      .body_len = cm->data.len,
  };
  cm->queue_id = id;
  cm->msg = delivery_msg_new(&sm);
  if (cm->msg == NULL) {
    goto fail;
  }
  cm->rec_len = delivery_msg_record_len(cm->msg);
  if (worker_spool_add(w, cm, &sm) != 0) {
    delivery_msg_free(cm->msg);
    goto fail;
  }
  return 0; /* the group commit owns cm now */
fail:
  buf_free(&cm->data);
  free(cm);
  return -1;
}

/* report_queue queues domain i's report to the record's mailto: URIs, as
 * a new message from postmaster@<hostname> (as dlv_queue_dsn does). */
static enum tlsrpt_outcome report_queue(struct worker *w, struct rpt_run *run,
                                        size_t i,
                                        const struct tlsrpt_record *rec) {
  const char *rcpts[TLSRPT_MAX_URIS];
  size_t n = 0;
  for (size_t k = 0; k < rec->num_uris; k++) {
    if (rec->uris[k].kind == TLSRPT_URI_MAILTO) {
      rcpts[n++] = rec->uris[k].text;
    }
  }
  if (n == 0) {
    return TLSRPT_OUT_NO_MAILTO;
  }
  char contact[300], qid[SPOOL_QUEUE_ID_LEN + 1];
  char report_id[TLSRPT_MAX_REPORT_ID + 1];
  snprintf(contact, sizeof(contact), "postmaster@%s", w->cfg->hostname);
  uint64_t id = spool_writer_new_id(w->spool, w->now_ms);
  spool_queue_id_format(id, qid);
  struct buf data = {0};
  if (report_build(w, run->agg, i, rcpts, n, contact, qid, &data, report_id,
                   sizeof(report_id)) != 0 ||
      tlsrpt_spool_report(w, id, contact, rcpts, n, &data) != 0) {
    buf_free(&data);
    log_msg("error", "tlsrpt: cannot queue the report for %s",
            tlsrpt_agg_domain(run->agg, i));
    return TLSRPT_OUT_ERROR;
  }
  log_queued(run, i, qid, report_id, rcpts[0], n);
  run->queued++;
  return TLSRPT_OUT_QUEUED;
}

static void log_domain(const char *event, const char *domain, const char *why) {
  struct log_rec r;
  log_begin(&r, event);
  log_str(&r, "domain", domain);
  log_str(&r, "why", why);
  log_end(&r);
}

/* txt_outcome: what the TXT answer of a domain lets us do (§3). */
static enum tlsrpt_outcome txt_outcome(struct worker *w, struct rpt_run *run,
                                       size_t i, const struct dns_answer *a) {
  const char *domain = tlsrpt_agg_domain(run->agg, i);
  char err[TLSRPT_ERR_LEN + 64];
  if (a->status == DNS_NOT_FOUND) {
    return TLSRPT_OUT_NO_RECORD;
  }
  if (a->status != DNS_OK) {
    log_domain("tlsrpt_lookup_failed", domain,
               a->why != NULL ? a->why : dns_status_name(a->status));
    return TLSRPT_OUT_LOOKUP_FAILED;
  }
  struct tlsrpt_record rec;
  switch (tlsrpt_txt_find(&rec, err, sizeof(err), a->rrs, a->num_rrs)) {
  case TLSRPT_TXT_FOUND:
    return report_queue(w, run, i, &rec);
  case TLSRPT_TXT_NONE:
    return TLSRPT_OUT_NO_RECORD;
  case TLSRPT_TXT_INVALID:
    break;
  }
  log_domain("tlsrpt_record_invalid", domain, err);
  return TLSRPT_OUT_INVALID;
}

static void run_pump(struct worker *w);

static void on_txt(void *arg, const struct dns_answer *a) {
  struct rpt_lookup *lk = arg;
  struct worker *w = lk->w;
  struct rpt_run *run = w->tlsrpt->run;
  if (lk->prev != NULL) {
    lk->prev->next = lk->next;
  } else {
    run->lookups = lk->next;
  }
  if (lk->next != NULL) {
    lk->next->prev = lk->prev;
  }
  run->in_flight--;
  enum tlsrpt_outcome o = txt_outcome(w, run, lk->index, a);
  METRIC_ADD(w->m.tlsrpt_reports[o], 1);
  free(lk);
  run_pump(w); /* may end the run */
}

/* run_lookup starts the TXT lookup of _smtp._tls.<domain i> (§3). */
static int run_lookup(struct worker *w, struct rpt_run *run, size_t i) {
  struct rpt_lookup *lk = calloc(1, sizeof(*lk));
  if (lk == NULL) {
    return -1;
  }
  char name[TLSRPT_MAX_DOMAIN + 16];
  snprintf(name, sizeof(name), "_smtp._tls.%s", tlsrpt_agg_domain(run->agg, i));
  lk->w = w;
  lk->index = i;
  lk->handle = dns_query(w->dns, name, DNS_TYPE_TXT, on_txt, lk);
  if (lk->handle == 0) {
    free(lk);
    return -1;
  }
  lk->next = run->lookups;
  if (run->lookups != NULL) {
    run->lookups->prev = lk;
  }
  run->lookups = lk;
  run->in_flight++;
  return 0;
}

/* run_pump starts lookups while slots are free, and ends the run once
 * every domain is done (or the worker stops). */
static void run_pump(struct worker *w) {
  struct tlsrpt_worker *tw = w->tlsrpt;
  struct rpt_run *run = tw->run;
  size_t n = tlsrpt_agg_num_domains(run->agg);
  while (!w->stopping && run->in_flight < TLSRPT_MAX_LOOKUPS && run->next < n) {
    size_t i = run->next++;
    if (run_lookup(w, run, i) != 0) {
      METRIC_ADD(w->m.tlsrpt_reports[TLSRPT_OUT_ERROR], 1);
    }
  }
  if (run->in_flight > 0 && !w->stopping) {
    return;
  }
  struct log_rec r;
  log_begin(&r, "tlsrpt_run_done");
  log_u64(&r, "domains", n);
  log_u64(&r, "reports", run->queued);
  log_end(&r);
  tw->run = NULL;
  run_free(w, run);
}

/* run_start looks up every domain of a merged aggregate. */
static void run_start(struct worker *w, struct tlsrpt_worker *tw,
                      struct tlsrpt_agg *agg) {
  int64_t start, end;
  tlsrpt_agg_period(agg, &start, &end);
  struct log_rec r;
  log_begin(&r, "tlsrpt_run");
  log_u64(&r, "domains", tlsrpt_agg_num_domains(agg));
  log_i64(&r, "start", start);
  log_i64(&r, "end", end);
  log_end(&r);
  tw->run = calloc(1, sizeof(*tw->run));
  if (tw->run == NULL) {
    log_msg("error", "tlsrpt: out of memory; this period's reports dropped");
    tlsrpt_agg_free(agg);
    return;
  }
  tw->run->agg = agg;
  run_pump(w);
}

/* take_handed: worker 0 takes the hub's aggregates once every worker
 * handed over, or TLSRPT_GRACE_MS after the first; merged into one, or
 * NULL. */
static struct tlsrpt_agg *take_handed(struct worker *w) {
  struct tlsrpt_hub *hub = w->d->tlsrpt;
  struct tlsrpt_agg *taken[TLSRPT_MAX_HANDED];
  size_t num = 0;
  pthread_mutex_lock(&hub->mu);
  if (hub->first_ms != 0 && (hub->num_handed >= w->d->num_workers ||
                             w->now_ms - hub->first_ms >= TLSRPT_GRACE_MS)) {
    num = hub->num_aggs;
    memcpy(taken, hub->aggs, num * sizeof(taken[0]));
    hub->num_aggs = 0;
    hub->num_handed = 0;
    hub->first_ms = 0;
  }
  pthread_mutex_unlock(&hub->mu);
  if (num == 0) {
    return NULL;
  }
  struct tlsrpt_agg_stats before;
  tlsrpt_agg_get_stats(taken[0], &before);
  for (size_t k = 1; k < num; k++) {
    if (tlsrpt_agg_merge(taken[0], taken[k]) != 0) {
      log_msg("error", "tlsrpt: out of memory merging; some sessions lost");
    }
    tlsrpt_agg_free(taken[k]);
  }
  stats_sync(w, taken[0], &before);
  return taken[0];
}

void tlsrpt_tick(struct worker *w) {
  struct tlsrpt_worker *tw = tw_get(w);
  if (tw == NULL) {
    return;
  }
  if (!w->cfg->tls_reports) {
    tlsrpt_agg_free(tw->agg); /* switched off by a reload */
    tw->agg = NULL;
    tw->period_end_s = 0;
    __atomic_store_n(&w->m.tlsrpt_domains, 0, __ATOMIC_RELAXED);
    return;
  }
  period_roll(w, tw);
  if (w->index != 0 || tw->run != NULL || w->stopping) {
    return;
  }
  struct tlsrpt_agg *agg = take_handed(w);
  if (agg != NULL && (tlsrpt_agg_num_domains(agg) == 0 || w->dns == NULL)) {
    if (w->dns == NULL) {
      log_msg("error", "tlsrpt: no resolver; this period's reports dropped");
    }
    tlsrpt_agg_free(agg);
    agg = NULL;
  }
  if (agg != NULL) {
    run_start(w, tw, agg);
  }
}
