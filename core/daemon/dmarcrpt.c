/* core/daemon/dmarcrpt.c — DMARC aggregate reports (RFC 7489 §7.2) sent
 * by the daemon; the contract is in daemon.h, the document and the §7.1
 * names in policy/dmarc.h. Modelled on tlsrpt.c.
 *
 * Flow:
 *   dmarcrpt_note (dkimglue.c, any worker): a message whose DMARC record
 *     was found and names rua URIs goes into the worker's aggregate of
 *     this period: its policy domain (the record kept for
 *     policy_published) and its row (source address, disposition,
 *     alignment, identifiers, results) with a count;
 *   dmarcrpt_tick (every worker, each second): a period that ended is
 *     handed to the hub (one pointer under the hub's mutex);
 *   worker 0's tick: once every worker handed over (or DMARCRPT_GRACE_MS
 *     passed), it merges them and starts a report run: for each domain
 *     (at most DMARCRPT_MAX_JOBS at once) the rua mailto: addresses, each
 *     in another organisational domain checked first (§7.1, a TXT lookup
 *     through worker 0's resolver), then one report message to the
 *     addresses left whose "!size" the gzipped report fits, queued in
 *     worker 0's spool. A domain with no address left is dropped
 *     (counted, not retried).
 *
 * The report goes out from dmarc.report_email (postmaster@<hostname> by
 * default) with no NOTIFY: so a rua mailbox that fails for good tells the
 * postmaster. */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "policy/mta_sts.h"

#define DMARCRPT_GRACE_MS 10000 /* worker 0 waits this long for hand-overs */
#define DMARCRPT_MAX_JOBS 8     /* domains of a report run at once */
#define DMARCRPT_MAX_HANDED 256 /* aggregates waiting in the hub */
#define DMARCRPT_MAX_DOMAIN 253
#define DMARCRPT_ROW_DKIM 4 /* DKIM results per row (dmarc_report_row) */

_Static_assert(sizeof(((struct worker_metrics *)0)->dmarcrpt_dropped) /
                       sizeof(uint64_t) ==
                   DMARCRPT_DROP_COUNT,
               "one counter per dmarcrpt_drop");
_Static_assert(sizeof(((struct worker_metrics *)0)->dmarcrpt_reports) /
                       sizeof(uint64_t) ==
                   DMARCRPT_OUT_COUNT,
               "one counter per dmarcrpt_outcome");
_Static_assert(sizeof(((struct worker_metrics *)0)->dmarcrpt_skipped) /
                       sizeof(uint64_t) ==
                   DMARCRPT_SKIP_COUNT,
               "one counter per dmarcrpt_skip");
_Static_assert(DMARC_MAX_URIS <= REPORT_MAX_RCPTS, "rua URIs fit");

/* ---- the aggregate ---- */

/* One policy domain of a period: its record and its rows. */
struct agg_domain {
  char name[DMARCRPT_MAX_DOMAIN + 1];
  uint64_t hash;
  struct dmarc_record policy; /* the last one seen */
  struct dmarc_report_row *rows;
  uint64_t *row_hash;
  size_t num_rows, cap_rows;
};

struct dmarcrpt_agg {
  int64_t begin, end; /* the period, seconds */
  unsigned max_domains;
  struct agg_domain **doms;
  size_t num_doms, cap_doms;
};

/* The daemon's hand-over point: finished periods, under mu. */
struct dmarcrpt_hub {
  pthread_mutex_t mu;
  struct dmarcrpt_agg *aggs[DMARCRPT_MAX_HANDED];
  size_t num_aggs;
  unsigned num_handed; /* hand-overs since worker 0 last took them */
  int64_t first_ms;    /* when the first of them came; 0: none */
};

struct rpt_run;

/* One domain's report in progress: its rua addresses and their §7.1
 * checks. */
struct rpt_job;
struct rpt_check {
  struct rpt_job *job;
  size_t k;
  uint64_t handle; /* the lookup in flight, or 0 */
};
enum addr_state { ADDR_OK, ADDR_SKIPPED, ADDR_WAITING };
struct rpt_job {
  struct rpt_job *next, *prev;
  struct worker *w;
  size_t index; /* the domain in the run's aggregate */
  unsigned waiting;
  size_t num_addrs;
  char addrs[DMARC_MAX_URIS][DMARC_MAX_URI];
  uint64_t max[DMARC_MAX_URIS]; /* "!size" in bytes; 0 none */
  enum addr_state state[DMARC_MAX_URIS];
  struct rpt_check checks[DMARC_MAX_URIS];
};

/* Worker 0's report run over one merged aggregate. */
struct rpt_run {
  struct dmarcrpt_agg *agg;
  size_t next; /* the next domain to start */
  unsigned in_flight;
  struct rpt_job *jobs; /* waiting for checks */
  uint64_t queued;
};

struct dmarcrpt_worker {
  struct dmarcrpt_agg *agg; /* this period's messages, or NULL */
  int64_t period_end_s;     /* 0: no period started */
  struct rpt_run *run;      /* worker 0: the run in progress */
};

/* fnv1a: the hash domains and rows are found by (then compared whole). */
static uint64_t fnv1a(const void *data, size_t len) {
  const uint8_t *p = data;
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < len; i++) {
    h = (h ^ p[i]) * 1099511628211ULL;
  }
  return h;
}

/* row_key_hash: a row's hash without its count. The rows are built
 * zeroed, so equal keys are equal bytes. */
static uint64_t row_key_hash(const struct dmarc_report_row *r) {
  struct dmarc_report_row k;
  memcpy(&k, r, sizeof(k)); /* padding too: bytes are compared */
  k.count = 0;
  return fnv1a(&k, sizeof(k));
}

static int row_same_key(const struct dmarc_report_row *a,
                        const struct dmarc_report_row *b) {
  struct dmarc_report_row x, y;
  memcpy(&x, a, sizeof(x));
  memcpy(&y, b, sizeof(y));
  x.count = y.count = 0;
  return memcmp(&x, &y, sizeof(x)) == 0;
}

static struct dmarcrpt_agg *agg_new(unsigned max_domains, int64_t begin,
                                    int64_t end) {
  struct dmarcrpt_agg *a = calloc(1, sizeof(*a));
  if (a != NULL) {
    a->max_domains = max_domains;
    a->begin = begin;
    a->end = end;
  }
  return a;
}

static void agg_free(struct dmarcrpt_agg *a) {
  if (a == NULL) {
    return;
  }
  for (size_t i = 0; i < a->num_doms; i++) {
    free(a->doms[i]->rows);
    free(a->doms[i]->row_hash);
    free(a->doms[i]);
  }
  free(a->doms);
  free(a);
}

/* agg_domain_get finds the domain, or adds it within the limits. NULL:
 * *out_drop says why. */
static struct agg_domain *agg_domain_get(struct dmarcrpt_agg *a,
                                         const char *name,
                                         enum dmarcrpt_drop *out_drop) {
  size_t len = strlen(name);
  uint64_t h = fnv1a(name, len);
  for (size_t i = 0; i < a->num_doms; i++) {
    if (a->doms[i]->hash == h && strcmp(a->doms[i]->name, name) == 0) {
      return a->doms[i];
    }
  }
  *out_drop = DMARCRPT_DROP_DOMAIN;
  if (len > DMARCRPT_MAX_DOMAIN || a->num_doms >= a->max_domains) {
    return NULL;
  }
  *out_drop = DMARCRPT_DROP_MEMORY;
  if (a->num_doms == a->cap_doms) {
    size_t cap = a->cap_doms ? 2 * a->cap_doms : 16;
    struct agg_domain **nd = realloc(a->doms, cap * sizeof(*nd));
    if (nd == NULL) {
      return NULL;
    }
    a->doms = nd;
    a->cap_doms = cap;
  }
  struct agg_domain *d = calloc(1, sizeof(*d));
  if (d == NULL) {
    return NULL;
  }
  memcpy(d->name, name, len + 1);
  d->hash = h;
  a->doms[a->num_doms++] = d;
  return d;
}

/* domain_add_row counts `count` messages of row r in d. 0, or -1 with
 * *out_drop. */
static int domain_add_row(struct agg_domain *d,
                          const struct dmarc_report_row *r, uint64_t count,
                          enum dmarcrpt_drop *out_drop) {
  uint64_t h = row_key_hash(r);
  for (size_t i = 0; i < d->num_rows; i++) {
    if (d->row_hash[i] == h && row_same_key(&d->rows[i], r)) {
      d->rows[i].count += count;
      return 0;
    }
  }
  if (d->num_rows >= DMARCRPT_MAX_ROWS) {
    *out_drop = DMARCRPT_DROP_ROW;
    return -1;
  }
  if (d->num_rows == d->cap_rows) {
    size_t cap = d->cap_rows ? 2 * d->cap_rows : 4;
    struct dmarc_report_row *nr = realloc(d->rows, cap * sizeof(*nr));
    if (nr != NULL) {
      d->rows = nr;
    }
    uint64_t *nh = nr != NULL ? realloc(d->row_hash, cap * sizeof(*nh)) : NULL;
    if (nh == NULL) {
      *out_drop = DMARCRPT_DROP_MEMORY;
      return -1;
    }
    d->row_hash = nh;
    d->cap_rows = cap;
  }
  memcpy(&d->rows[d->num_rows], r, sizeof(*r));
  d->rows[d->num_rows].count = count;
  d->row_hash[d->num_rows++] = h;
  return 0;
}

/* agg_merge adds src's counts to dst; what does not fit is added to
 * dropped[], per message. */
static void agg_merge(struct dmarcrpt_agg *dst, const struct dmarcrpt_agg *src,
                      uint64_t dropped[DMARCRPT_DROP_COUNT]) {
  for (size_t i = 0; i < src->num_doms; i++) {
    const struct agg_domain *s = src->doms[i];
    enum dmarcrpt_drop why = DMARCRPT_DROP_MEMORY;
    struct agg_domain *d = agg_domain_get(dst, s->name, &why);
    if (d != NULL) {
      d->policy = s->policy;
    }
    for (size_t k = 0; k < s->num_rows; k++) {
      if (d == NULL ||
          domain_add_row(d, &s->rows[k], s->rows[k].count, &why) != 0) {
        dropped[why] += s->rows[k].count;
      }
    }
  }
}

/* ---- set-up ---- */

int dmarcrpt_init(struct daemon *d) {
  d->dmarcrpt = calloc(1, sizeof(*d->dmarcrpt));
  if (d->dmarcrpt == NULL) {
    return -1;
  }
  pthread_mutex_init(&d->dmarcrpt->mu, NULL);
  return 0;
}

void dmarcrpt_free(struct daemon *d) {
  struct dmarcrpt_hub *hub = d->dmarcrpt;
  if (hub == NULL) {
    return;
  }
  for (size_t i = 0; i < hub->num_aggs; i++) {
    agg_free(hub->aggs[i]);
  }
  pthread_mutex_destroy(&hub->mu);
  free(hub);
  d->dmarcrpt = NULL;
}

static struct dmarcrpt_worker *dw_get(struct worker *w) {
  if (w->dmarcrpt == NULL) {
    w->dmarcrpt = calloc(1, sizeof(*w->dmarcrpt));
  }
  return w->dmarcrpt;
}

static void job_free(struct worker *w, struct rpt_job *job) {
  for (size_t k = 0; k < job->num_addrs; k++) {
    if (job->checks[k].handle != 0 && w->dns != NULL) {
      dns_cancel(w->dns, job->checks[k].handle);
    }
  }
  free(job);
}

static void run_free(struct worker *w, struct rpt_run *run) {
  while (run->jobs != NULL) {
    struct rpt_job *job = run->jobs;
    run->jobs = job->next;
    job_free(w, job);
  }
  agg_free(run->agg);
  free(run);
}

void dmarcrpt_worker_free(struct worker *w) {
  struct dmarcrpt_worker *dw = w->dmarcrpt;
  if (dw == NULL) {
    return;
  }
  if (dw->run != NULL) {
    run_free(w, dw->run);
  }
  agg_free(dw->agg);
  free(dw);
  w->dmarcrpt = NULL;
}

/* ---- periods and the hand-over ---- */

/* hand_over gives the worker's aggregate (maybe none) to the hub: the
 * period ended. Past DMARCRPT_MAX_HANDED waiting (worker 0 busy for many
 * periods), it is merged into the last one, here. */
static void hand_over(struct worker *w, struct dmarcrpt_worker *dw) {
  struct dmarcrpt_hub *hub = w->d->dmarcrpt;
  struct dmarcrpt_agg *agg = dw->agg;
  uint64_t dropped[DMARCRPT_DROP_COUNT] = {0};
  dw->agg = NULL;
  __atomic_store_n(&w->m.dmarcrpt_domains, 0, __ATOMIC_RELAXED);
  pthread_mutex_lock(&hub->mu);
  if (agg != NULL && hub->num_aggs < DMARCRPT_MAX_HANDED) {
    hub->aggs[hub->num_aggs++] = agg;
    agg = NULL;
  } else if (agg != NULL) {
    agg_merge(hub->aggs[hub->num_aggs - 1], agg, dropped);
  }
  hub->num_handed++;
  if (hub->first_ms == 0) {
    hub->first_ms = w->now_ms;
  }
  pthread_mutex_unlock(&hub->mu);
  agg_free(agg);
  for (int k = 0; k < DMARCRPT_DROP_COUNT; k++) {
    METRIC_ADD(w->m.dmarcrpt_dropped[k], dropped[k]);
  }
}

/* period_roll: the period ends at a multiple of dmarc.report_interval
 * seconds since the epoch (UTC midnight for a day, §7.2: "the reporting
 * period"); once it is over, the worker's counts go to the hub. */
static void period_roll(struct worker *w, struct dmarcrpt_worker *dw) {
  int64_t now_s = w->now_ms / 1000;
  int64_t len = w->cfg->dmarc_report_interval;
  if (dw->period_end_s != 0 && now_s < dw->period_end_s) {
    return;
  }
  if (dw->period_end_s != 0) {
    hand_over(w, dw);
  }
  dw->period_end_s = now_s - now_s % len + len;
}

/* agg_current: the worker's aggregate of this period, made on first use. */
static struct dmarcrpt_agg *agg_current(struct worker *w,
                                        struct dmarcrpt_worker *dw) {
  period_roll(w, dw);
  if (dw->agg == NULL) {
    dw->agg = agg_new(w->cfg->dmarc_report_max_domains,
                      dw->period_end_s - w->cfg->dmarc_report_interval,
                      dw->period_end_s);
  }
  return dw->agg;
}

/* ---- messages ---- */

/* str_copy: src into dst, cut to fit (a selector over 63 octets). */
static void str_copy(char *dst, size_t dst_len, const char *src) {
  size_t n = strnlen(src, dst_len - 1);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

/* row_fill: the report row of one message (§7.2, Appendix C "record"). */
static void row_fill(struct dmarc_report_row *r, const struct dmarcrpt_msg *m) {
  memset(r, 0, sizeof(*r)); /* equal keys are equal bytes */
  snprintf(r->source_ip, sizeof(r->source_ip), "%s", m->source_ip);
  r->disposition = m->disposition;
  r->dkim_aligned_pass = m->outcome->dkim_aligned;
  r->spf_aligned_pass = m->outcome->spf_aligned;
  snprintf(r->header_from, sizeof(r->header_from), "%s", m->header_from);
  const char *spf_dom = "";
  const char *spf_res = "none";
  if (m->spf != NULL && m->spf->done && m->spf->q != NULL) {
    spf_dom = spf_domain(m->spf->q);
    spf_res = spf_result_name(m->spf->result);
  }
  snprintf(r->envelope_from, sizeof(r->envelope_from), "%s", spf_dom);
  snprintf(r->spf_domain, sizeof(r->spf_domain), "%s", spf_dom);
  snprintf(r->spf_scope, sizeof(r->spf_scope), "mfrom");
  snprintf(r->spf_result, sizeof(r->spf_result), "%s", spf_res);
  size_t n = m->v != NULL ? dkim_verify_count(m->v) : 0;
  for (size_t i = 0; i < n && r->num_dkim < DMARCRPT_ROW_DKIM; i++) {
    const struct dkim_verdict *vd = dkim_verify_verdict(m->v, i);
    if (vd == NULL || vd->domain[0] == '\0') {
      continue;
    }
    size_t k = r->num_dkim++;
    str_copy(r->dkim[k].domain, sizeof(r->dkim[k].domain), vd->domain);
    str_copy(r->dkim[k].selector, sizeof(r->dkim[k].selector), vd->selector);
    str_copy(r->dkim[k].result, sizeof(r->dkim[k].result),
             dkim_result_name(vd->result));
  }
}

/* ip_valid: 1 if s is an IPv4 or IPv6 address in text form. */
static int ip_valid(const char *s) {
  unsigned char b[16];
  return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

void dmarcrpt_note(struct worker *w, const struct dmarcrpt_msg *m) {
  struct dmarcrpt_worker *dw;
  struct dmarcrpt_agg *agg;
  if (!w->cfg->dmarc_reports || m->rec == NULL || m->rec->num_rua == 0 ||
      m->source_ip == NULL || !ip_valid(m->source_ip) ||
      m->policy_domain == NULL || !mta_sts_domain_valid(m->policy_domain) ||
      (dw = dw_get(w)) == NULL || (agg = agg_current(w, dw)) == NULL) {
    return;
  }
  struct dmarc_report_row row;
  row_fill(&row, m);
  enum dmarcrpt_drop why = DMARCRPT_DROP_MEMORY;
  struct agg_domain *d = agg_domain_get(agg, m->policy_domain, &why);
  if (d == NULL || domain_add_row(d, &row, 1, &why) != 0) {
    METRIC_ADD(w->m.dmarcrpt_dropped[why], 1);
    return;
  }
  d->policy = *m->rec;
  METRIC_ADD(w->m.dmarcrpt_messages, 1);
  __atomic_store_n(&w->m.dmarcrpt_domains, agg->num_doms, __ATOMIC_RELAXED);
}

/* ---- the report message (§7.2.1.1) ---- */

/* Who we are in reports: dmarc.report_org_name / report_email, or the
 * host name and its postmaster. */
struct reporter {
  char org[256];
  char email[320];
};

static void reporter_get(const struct config *cfg, struct reporter *out) {
  snprintf(out->org, sizeof(out->org), "%s",
           cfg->dmarc_report_org_name[0] ? cfg->dmarc_report_org_name
                                         : cfg->hostname);
  if (cfg->dmarc_report_email[0] != '\0') {
    snprintf(out->email, sizeof(out->email), "%s", cfg->dmarc_report_email);
  } else {
    snprintf(out->email, sizeof(out->email), "postmaster@%s", cfg->hostname);
  }
}

/* addr_usable: 1 if a rua address can go into To: and the envelope as it
 * is: local@domain, printable ASCII without blanks, quotes, angle
 * brackets, commas or backslashes, the domain an LDH name. */
static int addr_usable(const char *a) {
  const char *at = strrchr(a, '@');
  if (at == NULL || at == a || !mta_sts_domain_valid(at + 1)) {
    return 0;
  }
  for (const char *p = a; *p != '\0'; p++) {
    if (*p <= ' ' || *p >= 0x7f || strchr("\"<>,\\()[];:", *p) != NULL) {
      return 0;
    }
  }
  return 1;
}

/* b64_lines appends data in base64 (RFC 2045 §6.8), lines of 76. */
static void b64_lines(struct buf *out, const uint8_t *data, size_t len) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char line[80];
  size_t n = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)data[i] << 16;
    v |= i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0;
    v |= i + 2 < len ? data[i + 2] : 0;
    line[n++] = tab[(v >> 18) & 63];
    line[n++] = tab[(v >> 12) & 63];
    line[n++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
    line[n++] = i + 2 < len ? tab[v & 63] : '=';
    if (n == 76 || i + 3 >= len) {
      line[n++] = '\r';
      line[n++] = '\n';
      buf_append(out, line, n);
      n = 0;
    }
  }
}

/* The parts of one report message. */
struct rpt_message {
  const struct reporter *me;
  const char *domain;
  const char *report_id;
  const char *filename;
  const char *const *rcpts;
  size_t num_rcpts;
  int64_t now_s, begin, end;
  const struct buf *gz;
};

/* message_build appends the report message: From, To, Subject "Report
 * Domain: D Submitter: S Report-ID: <ID>" (§7.2.1.1), Date, Message-ID,
 * MIME-Version, Auto-Submitted, and a multipart/mixed body with a short
 * text part and the application/gzip report in base64 under its §7.2.1.1
 * file name. 0 or -1 (memory). */
static int message_build(struct buf *out, const struct rpt_message *m) {
  char date[64], boundary[64];
  time_t t = (time_t)m->now_s;
  struct tm tm;
  if (gmtime_r(&t, &tm) == NULL ||
      strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0) {
    return -1;
  }
  /* Base64 and the text part never hold "=_" (RFC 2045 §6.7). */
  snprintf(boundary, sizeof(boundary), "=_dmarc_%016llx_%lld",
           (unsigned long long)fnv1a(m->report_id, strlen(m->report_id)),
           (long long)m->now_s);
  buf_printf(out, "From: %s\r\nTo: %s", m->me->email, m->rcpts[0]);
  for (size_t k = 1; k < m->num_rcpts; k++) {
    buf_printf(out, ",\r\n %s", m->rcpts[k]);
  }
  buf_printf(out,
             "\r\nSubject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n"
             "Date: %s\r\nMessage-ID: <%s>\r\nMIME-Version: 1.0\r\n"
             "Auto-Submitted: auto-generated\r\n"
             "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n"
             "This is a multi-part message in MIME format.\r\n\r\n"
             "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
             "This is a DMARC aggregate report (RFC 7489) for %s from %s,\r\n"
             "covering %lld to %lld (seconds since the epoch, UTC).\r\n\r\n"
             "--%s\r\nContent-Type: application/gzip; name=\"%s\"\r\n"
             "Content-Transfer-Encoding: base64\r\n"
             "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n",
             m->domain, m->me->org, m->report_id, date, m->report_id, boundary,
             boundary, m->domain, m->me->org, (long long)m->begin,
             (long long)m->end, boundary, m->filename, m->filename);
  b64_lines(out, m->gz->data, m->gz->len);
  return buf_printf(out, "\r\n--%s--\r\n", boundary);
}

/* ---- reports (worker 0) ---- */

/* report_doc builds domain d's report: XML (Appendix C) gzipped into gz,
 * its file name. 0 or -1. */
static int report_doc(const struct agg_domain *d,
                      const struct dmarc_report_meta *meta, int64_t now_s,
                      struct buf *gz, char *filename, size_t filename_len) {
  struct buf xml = {0};
  int rc = -1;
  if (dmarc_report_xml(meta, d->rows, d->num_rows, &xml) == 0 &&
      dmarc_report_filename(meta, filename, filename_len) == 0 &&
      tlsrpt_gzip(gz, xml.data, xml.len, now_s) == 0) {
    rc = 0;
  }
  buf_free(&xml);
  return rc;
}

static void log_queued(const struct agg_domain *d, const char *qid,
                       const char *report_id, const char *to, size_t n,
                       size_t gz_len) {
  uint64_t total = 0;
  for (size_t i = 0; i < d->num_rows; i++) {
    total += d->rows[i].count;
  }
  struct log_rec r;
  log_begin(&r, "dmarcrpt_queued");
  log_str(&r, "qid", qid);
  log_str(&r, "domain", d->name);
  log_str(&r, "report_id", report_id);
  log_str(&r, "to", to);
  log_u64(&r, "nrcpt", n);
  log_u64(&r, "rows", d->num_rows);
  log_u64(&r, "messages", total);
  log_u64(&r, "bytes", gz_len);
  log_end(&r);
}

static void log_skip(const char *domain, const char *addr, const char *why) {
  struct log_rec r;
  log_begin(&r, "dmarcrpt_rua_skipped");
  log_str(&r, "domain", domain);
  log_str(&r, "to", addr);
  log_str(&r, "why", why);
  log_end(&r);
}

/* job_rcpts: the job's addresses still allowed whose "!size" the report
 * fits (the others counted). */
static size_t job_rcpts(struct worker *w, struct rpt_job *job,
                        const struct agg_domain *d, size_t gz_len,
                        const char **out) {
  size_t n = 0;
  for (size_t k = 0; k < job->num_addrs; k++) {
    if (job->state[k] != ADDR_OK) {
      continue;
    }
    if (job->max[k] != 0 && gz_len > job->max[k]) {
      METRIC_ADD(w->m.dmarcrpt_skipped[DMARCRPT_SKIP_SIZE], 1);
      log_skip(d->name, job->addrs[k], "report over the URI's size limit");
      continue;
    }
    out[n++] = job->addrs[k];
  }
  return n;
}

/* report_queue builds and queues domain d's report to the job's
 * addresses left. */
static enum dmarcrpt_outcome report_queue(struct worker *w, struct rpt_run *run,
                                          struct rpt_job *job) {
  const struct agg_domain *d = run->agg->doms[job->index];
  struct reporter me;
  reporter_get(w->cfg, &me);
  char qid[SPOOL_QUEUE_ID_LEN + 1], report_id[400], filename[600];
  uint64_t id = spool_writer_new_id(w->spool, w->now_ms);
  spool_queue_id_format(id, qid);
  snprintf(report_id, sizeof(report_id), "%lld.%s@%s",
           (long long)run->agg->begin, qid, w->cfg->hostname);
  struct dmarc_report_meta meta = {
      .org_name = me.org,
      .email = me.email,
      .report_id = report_id,
      .begin = run->agg->begin,
      .end = run->agg->end - 1, /* inclusive, like the file name's */
      .domain = d->name,
      .policy = &d->policy,
  };
  struct buf gz = {0}, data = {0};
  if (report_doc(d, &meta, w->now_ms / 1000, &gz, filename, sizeof(filename)) !=
      0) {
    buf_free(&gz);
    log_msg("error", "dmarcrpt: cannot build the report for %s", d->name);
    return DMARCRPT_OUT_ERROR;
  }
  const char *rcpts[DMARC_MAX_URIS];
  size_t n = job_rcpts(w, job, d, gz.len, rcpts);
  if (n == 0) {
    buf_free(&gz);
    return DMARCRPT_OUT_NO_RCPT;
  }
  struct rpt_message m = {&me, d->name,          report_id,  filename, rcpts,
                          n,   w->now_ms / 1000, meta.begin, meta.end, &gz};
  int rc = message_build(&data, &m);
  size_t gz_len = gz.len;
  buf_free(&gz);
  if (rc != 0 || tlsrpt_spool_report(w, id, me.email, rcpts, n, &data) != 0) {
    buf_free(&data);
    log_msg("error", "dmarcrpt: cannot queue the report for %s", d->name);
    return DMARCRPT_OUT_ERROR;
  }
  log_queued(d, qid, report_id, rcpts[0], n, gz_len);
  run->queued++;
  return DMARCRPT_OUT_QUEUED;
}

static void job_unlink(struct rpt_run *run, struct rpt_job *job) {
  if (job->prev != NULL) {
    job->prev->next = job->next;
  } else if (run->jobs == job) {
    run->jobs = job->next;
  }
  if (job->next != NULL) {
    job->next->prev = job->prev;
  }
  job->next = job->prev = NULL;
}

/* job_finish: every check of the job is in; the report goes out. */
static void job_finish(struct worker *w, struct rpt_run *run,
                       struct rpt_job *job) {
  enum dmarcrpt_outcome o = report_queue(w, run, job);
  METRIC_ADD(w->m.dmarcrpt_reports[o], 1);
  job_free(w, job);
}

static void run_pump(struct worker *w);

/* on_check: the §7.1 authorisation TXT answer for one rua address: a
 * record starting "v=DMARC1" allows it. */
static void on_check(void *arg, const struct dns_answer *a) {
  struct rpt_check *ck = arg;
  struct rpt_job *job = ck->job;
  struct worker *w = job->w;
  struct rpt_run *run = w->dmarcrpt->run;
  const char *domain = run->agg->doms[job->index]->name;
  int found = 0;
  ck->handle = 0;
  for (size_t k = 0; a->status == DNS_OK && k < a->num_rrs; k++) {
    found |= a->rrs[k].type == DNS_TYPE_TXT &&
             dmarc_is_record(a->rrs[k].rd.txt.data, a->rrs[k].rd.txt.data_len);
  }
  job->state[ck->k] = found ? ADDR_OK : ADDR_SKIPPED;
  if (!found) {
    int failed = a->status != DNS_OK && a->status != DNS_NOT_FOUND;
    METRIC_ADD(w->m.dmarcrpt_skipped[failed ? DMARCRPT_SKIP_LOOKUP
                                            : DMARCRPT_SKIP_EXTERNAL],
               1);
    log_skip(domain, job->addrs[ck->k],
             failed ? "external destination check failed"
                    : "external destination not authorised (RFC 7489 7.1)");
  }
  if (--job->waiting > 0) {
    return;
  }
  job_unlink(run, job);
  run->in_flight--;
  job_finish(w, run, job);
  run_pump(w); /* may end the run */
}

/* job_addr prepares rua URI k of the domain's record: its address, and
 * the §7.1 check when it is in another organisational domain. */
static void job_addr(struct worker *w, struct rpt_job *job, const char *domain,
                     const struct dmarc_record *rec, size_t k) {
  const struct runtime *rt = cfg_runtime(w->cfg);
  const struct dmarc_psl *psl = rt != NULL ? rt->psl : NULL;
  size_t i = job->num_addrs;
  char name[300];
  job->state[i] = ADDR_SKIPPED;
  job->checks[i] = (struct rpt_check){job, i, 0};
  if (dmarc_rua_mailto(rec->rua[k], job->addrs[i], sizeof(job->addrs[i])) !=
          0 ||
      !addr_usable(job->addrs[i])) {
    METRIC_ADD(w->m.dmarcrpt_skipped[DMARCRPT_SKIP_UNUSABLE], 1);
    log_skip(domain, rec->rua[k], "not a usable mailto: URI");
    return;
  }
  job->max[i] = rec->rua_max[k];
  job->num_addrs++;
  const char *rua_domain = strrchr(job->addrs[i], '@') + 1;
  int rc =
      dmarc_external_check_name(psl, domain, rua_domain, name, sizeof(name));
  if (rc == -1) {
    job->state[i] = ADDR_OK; /* the same organisational domain */
  } else if (rc == 0 && w->dns != NULL &&
             (job->checks[i].handle = dns_query(w->dns, name, DNS_TYPE_TXT,
                                                on_check, &job->checks[i])) !=
                 0) {
    job->state[i] = ADDR_WAITING;
    job->waiting++;
  } else {
    METRIC_ADD(w->m.dmarcrpt_skipped[rc == 0 ? DMARCRPT_SKIP_LOOKUP
                                             : DMARCRPT_SKIP_EXTERNAL],
               1);
    log_skip(domain, job->addrs[i], "external destination cannot be checked");
  }
}

/* job_start: domain i's addresses and checks; the job waits in the run
 * while checks are on their way, else its report goes out now. */
static void job_start(struct worker *w, struct rpt_run *run, size_t i) {
  const struct agg_domain *d = run->agg->doms[i];
  struct rpt_job *job = calloc(1, sizeof(*job));
  if (job == NULL) {
    METRIC_ADD(w->m.dmarcrpt_reports[DMARCRPT_OUT_ERROR], 1);
    return;
  }
  job->w = w;
  job->index = i;
  for (size_t k = 0; k < d->policy.num_rua && k < DMARC_MAX_URIS; k++) {
    job_addr(w, job, d->name, &d->policy, k);
  }
  if (job->waiting == 0) {
    job_finish(w, run, job);
    return;
  }
  job->next = run->jobs;
  if (run->jobs != NULL) {
    run->jobs->prev = job;
  }
  run->jobs = job;
  run->in_flight++;
}

/* run_pump starts domains while slots are free, and ends the run once
 * every domain is done (or the worker stops). */
static void run_pump(struct worker *w) {
  struct dmarcrpt_worker *dw = w->dmarcrpt;
  struct rpt_run *run = dw->run;
  size_t n = run->agg->num_doms;
  while (!w->stopping && run->in_flight < DMARCRPT_MAX_JOBS && run->next < n) {
    job_start(w, run, run->next++);
  }
  if (run->in_flight > 0 && !w->stopping) {
    return;
  }
  struct log_rec r;
  log_begin(&r, "dmarcrpt_run_done");
  log_u64(&r, "domains", n);
  log_u64(&r, "reports", run->queued);
  log_end(&r);
  dw->run = NULL;
  run_free(w, run);
}

/* run_start reports on every domain of a merged aggregate. */
static void run_start(struct worker *w, struct dmarcrpt_worker *dw,
                      struct dmarcrpt_agg *agg) {
  struct log_rec r;
  log_begin(&r, "dmarcrpt_run");
  log_u64(&r, "domains", agg->num_doms);
  log_i64(&r, "start", agg->begin);
  log_i64(&r, "end", agg->end);
  log_end(&r);
  dw->run = calloc(1, sizeof(*dw->run));
  if (dw->run == NULL) {
    log_msg("error", "dmarcrpt: out of memory; this period's reports dropped");
    agg_free(agg);
    return;
  }
  dw->run->agg = agg;
  run_pump(w);
}

/* take_handed: worker 0 takes the hub's aggregates once every worker
 * handed over, or DMARCRPT_GRACE_MS after the first; merged into one, or
 * NULL. */
static struct dmarcrpt_agg *take_handed(struct worker *w) {
  struct dmarcrpt_hub *hub = w->d->dmarcrpt;
  struct dmarcrpt_agg *taken[DMARCRPT_MAX_HANDED];
  size_t num = 0;
  pthread_mutex_lock(&hub->mu);
  if (hub->first_ms != 0 && (hub->num_handed >= w->d->num_workers ||
                             w->now_ms - hub->first_ms >= DMARCRPT_GRACE_MS)) {
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
  uint64_t dropped[DMARCRPT_DROP_COUNT] = {0};
  for (size_t k = 1; k < num; k++) {
    /* The period is the earliest's to the latest's. */
    taken[0]->begin =
        taken[k]->begin < taken[0]->begin ? taken[k]->begin : taken[0]->begin;
    taken[0]->end =
        taken[k]->end > taken[0]->end ? taken[k]->end : taken[0]->end;
    agg_merge(taken[0], taken[k], dropped);
    agg_free(taken[k]);
  }
  for (int k = 0; k < DMARCRPT_DROP_COUNT; k++) {
    METRIC_ADD(w->m.dmarcrpt_dropped[k], dropped[k]);
  }
  return taken[0];
}

void dmarcrpt_tick(struct worker *w) {
  struct dmarcrpt_worker *dw = dw_get(w);
  if (dw == NULL) {
    return;
  }
  if (!w->cfg->dmarc_reports) {
    agg_free(dw->agg); /* switched off by a reload */
    dw->agg = NULL;
    dw->period_end_s = 0;
    __atomic_store_n(&w->m.dmarcrpt_domains, 0, __ATOMIC_RELAXED);
    return;
  }
  period_roll(w, dw);
  if (w->index != 0 || dw->run != NULL || w->stopping) {
    return;
  }
  struct dmarcrpt_agg *agg = take_handed(w);
  if (agg != NULL && agg->num_doms == 0) {
    agg_free(agg);
    agg = NULL;
  }
  if (agg != NULL) {
    run_start(w, dw, agg);
  }
}
