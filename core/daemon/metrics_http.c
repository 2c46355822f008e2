/* core/daemon/metrics_http.c — GET /metrics: every worker's counters summed
 * at scrape time, in Prometheus text format 0.0.4. */
#include <stdio.h>
#include <string.h>

#include "core/daemon/daemon.h"

static const char *const verb_names[] = {
    "helo", "ehlo", "mail", "rcpt", "data",     "bdat", "rset",
    "noop", "quit", "vrfy", "help", "starttls", "auth", "unknown",
};
_Static_assert(sizeof(verb_names) / sizeof(verb_names[0]) == SMTP_VERB_COUNT,
               "one name per SMTP verb");
static const char *const listener_names[] = {
    "smtp", "submission", "submissions", "metrics", "control"};
_Static_assert(sizeof(listener_names) / sizeof(listener_names[0]) ==
                   LISTEN_COUNT,
               "one name per listener");
static const char *const reject_names[REJECT_COUNT] = {
    "relay_denied", "spool_full", "spool_error", "shutdown"};

/* Sum of one uint64_t field over all workers, read with relaxed loads. */
#define SUM(d, field)                                                          \
  ({                                                                           \
    uint64_t s_ = 0;                                                           \
    for (unsigned i_ = 0; i_ < (d)->num_workers; i_++) {                       \
      s_ += METRIC_GET((d)->workers[i_].m.field);                              \
    }                                                                          \
    s_;                                                                        \
  })

static void render_labelled(struct buf *out, const char *name, const char *key,
                            const char *value, double v) {
  char label[128];
  metric_label(label, sizeof(label), key, value);
  metric_write_value(out, name, label, v);
}

/* render_counter writes one unlabelled metric, its HELP/TYPE first. */
static void render_counter(struct buf *out, const char *name, const char *type,
                           const char *help, double v) {
  metric_write_header(out, name, type, help);
  metric_write_value(out, name, NULL, v);
}

static void render_sessions(struct daemon *d, struct buf *out) {
  metric_write_header(out, "postseal_smtp_sessions_total", "counter",
                      "SMTP sessions accepted, by listener.");
  for (int k = 0; k < LISTEN_METRICS; k++) {
    render_labelled(out, "postseal_smtp_sessions_total", "listener",
                    listener_names[k], (double)SUM(d, sessions_total[k]));
  }
  metric_write_header(out, "postseal_smtp_sessions_active", "gauge",
                      "SMTP sessions open now, by listener.");
  for (int k = 0; k < LISTEN_METRICS; k++) {
    render_labelled(out, "postseal_smtp_sessions_active", "listener",
                    listener_names[k],
                    (double)(int64_t)SUM(d, sessions_active[k]));
  }
  metric_write_header(out, "postseal_smtp_sessions_refused_total", "counter",
                      "Connections refused because a thread was at its "
                      "session limit.");
  metric_write_value(out, "postseal_smtp_sessions_refused_total", NULL,
                     (double)SUM(d, sessions_refused));
  metric_write_header(out, "postseal_smtp_timeouts_total", "counter",
                      "SMTP sessions closed by an RFC 5321 timeout.");
  metric_write_value(out, "postseal_smtp_timeouts_total", NULL,
                     (double)SUM(d, timeouts));
}

static void render_smtp(struct daemon *d, struct buf *out) {
  metric_write_header(out, "postseal_smtp_commands_total", "counter",
                      "SMTP commands received, by verb.");
  for (int v = 0; v < SMTP_VERB_COUNT; v++) {
    render_labelled(out, "postseal_smtp_commands_total", "verb", verb_names[v],
                    (double)SUM(d, smtp.commands[v]));
  }
  metric_write_header(out, "postseal_smtp_replies_total", "counter",
                      "SMTP replies sent, by class.");
  for (int k = 2; k <= 5; k++) {
    char cls[4] = {(char)('0' + k), 'x', 'x', '\0'};
    render_labelled(out, "postseal_smtp_replies_total", "class", cls,
                    (double)SUM(d, smtp.replies[k]));
  }
  metric_write_header(out, "postseal_smtp_received_bytes_total", "counter",
                      "Bytes received on SMTP sessions.");
  metric_write_value(out, "postseal_smtp_received_bytes_total", NULL,
                     (double)SUM(d, bytes_received));
}

static void render_messages(struct daemon *d, struct buf *out) {
  metric_write_header(out, "postseal_messages_accepted_total", "counter",
                      "Messages acknowledged with 250 after a durable commit.");
  metric_write_value(out, "postseal_messages_accepted_total", NULL,
                     (double)SUM(d, messages_accepted));
  metric_write_header(out, "postseal_messages_rejected_total", "counter",
                      "Messages refused at end of data, by reason.");
  for (int r = 0; r < REJECT_COUNT; r++) {
    render_labelled(out, "postseal_messages_rejected_total", "reason",
                    reject_names[r], (double)SUM(d, messages_rejected[r]));
  }
  metric_write_header(out, "postseal_recipients_rejected_total", "counter",
                      "Recipients refused at RCPT, by reason.");
  for (int r = 0; r < REJECT_COUNT; r++) {
    render_labelled(out, "postseal_recipients_rejected_total", "reason",
                    reject_names[r], (double)SUM(d, rcpts_rejected[r]));
  }
  metric_write_header(out, "postseal_queue_messages", "gauge",
                      "Messages in the spool not yet finished.");
  metric_write_value(out, "postseal_queue_messages", NULL,
                     (double)(int64_t)SUM(d, queue_messages));
  static const char *const states[3] = {"held", "active", "deferred"};
  metric_write_header(out, "postseal_queue_messages_by_state", "gauge",
                      "Queued messages with open recipients, by state "
                      "(refreshed every second): held by the operator, "
                      "active (being delivered or due), deferred.");
  for (int i = 0; i < 3; i++) {
    render_labelled(out, "postseal_queue_messages_by_state", "state", states[i],
                    (double)SUM(d, queue_state[i]));
  }
}

/* render_handoffs: jobs passed between workers (delivery.c), by path,
 * and the wakes that told the other worker. */
static void render_handoffs(struct daemon *d, struct buf *out) {
  uint64_t v[5] = {0};
  for (unsigned i = 0; i < d->num_workers; i++) {
    const struct dlv_xstats *x = &d->workers[i].dlv_xstats;
    v[0] += METRIC_GET(x->ring);
    v[1] += METRIC_GET(x->overflow);
    v[2] += METRIC_GET(x->early);
    v[3] += METRIC_GET(x->wake_msg);
    v[4] += METRIC_GET(x->wake_fd);
  }
  metric_write_header(out, "postseal_delivery_handoffs_total", "counter",
                      "Delivery jobs passed between workers (handed over or "
                      "coming back), by path: lock-free ring, locked list "
                      "because the ring was full (overflow), locked list "
                      "before the loops ran (early).");
  render_labelled(out, "postseal_delivery_handoffs_total", "path", "ring",
                  (double)v[0]);
  render_labelled(out, "postseal_delivery_handoffs_total", "path", "overflow",
                  (double)v[1]);
  render_labelled(out, "postseal_delivery_handoffs_total", "path", "early",
                  (double)v[2]);
  metric_write_header(out, "postseal_delivery_handoff_wakes_total", "counter",
                      "Wakes sent to another worker for hand-overs, by "
                      "means.");
  render_labelled(out, "postseal_delivery_handoff_wakes_total", "by",
                  "msg_ring", (double)v[3]);
  render_labelled(out, "postseal_delivery_handoff_wakes_total", "by", "eventfd",
                  (double)v[4]);
}

static void render_delivery(struct daemon *d, struct buf *out) {
  static const char *const results[DLV_RESULT_COUNT] = {"delivered", "deferred",
                                                        "bounced"};
  metric_write_header(out, "postseal_delivery_attempts_total", "counter",
                      "Delivery attempt outcomes, per recipient.");
  for (int r = 0; r < DLV_RESULT_COUNT; r++) {
    render_labelled(out, "postseal_delivery_attempts_total", "result",
                    results[r], (double)SUM(d, dlv_attempts[r]));
  }
  static const char *const reasons[8] = {"other",       "address", "mailbox",
                                         "mail_system", "network", "protocol",
                                         "content",     "security"};
  metric_write_header(out, "postseal_delivery_outcomes_total", "counter",
                      "Delivery attempt outcomes, per recipient, by the "
                      "subject of their RFC 3463 status code (x.Y.z).");
  for (int r = 0; r < DLV_RESULT_COUNT; r++) {
    for (int k = 0; k < 8; k++) {
      uint64_t v = SUM(d, dlv_reasons[r][k]);
      if (v == 0) {
        continue; /* only the pairs that happened */
      }
      char a[64], b[64], label[160];
      metric_label(a, sizeof(a), "result", results[r]);
      metric_label(b, sizeof(b), "reason", reasons[k]);
      snprintf(label, sizeof(label), "%s,%s", a, b);
      metric_write_value(out, "postseal_delivery_outcomes_total", label,
                         (double)v);
    }
  }
  metric_write_header(out, "postseal_delivery_connections_total", "counter",
                      "Outbound connections opened, and messages sent on an "
                      "already used connection (reused).");
  render_labelled(out, "postseal_delivery_connections_total", "kind", "opened",
                  (double)SUM(d, dlv_conns_opened));
  render_labelled(out, "postseal_delivery_connections_total", "kind", "reused",
                  (double)SUM(d, dlv_conns_reused));
  render_handoffs(d, out);
  struct metric_hist h = {0};
  for (unsigned i = 0; i < d->num_workers; i++) {
    metric_hist_add_into(&h, &d->workers[i].m.dlv_seconds,
                         &daemon_delivery_spec);
  }
  metric_write_header(out, "postseal_delivery_duration_seconds", "histogram",
                      "Time from queueing to delivery, per recipient "
                      "delivered.");
  metric_write_hist(out, "postseal_delivery_duration_seconds", NULL, &h,
                    &daemon_delivery_spec);
}

static void render_dns(struct daemon *d, struct buf *out) {
  metric_write_header(out, "postseal_spool_segments_reclaimed_total", "counter",
                      "Spool segments deleted while running, once every "
                      "message in them was finished.");
  metric_write_value(out, "postseal_spool_segments_reclaimed_total", NULL,
                     (double)SUM(d, segments_reclaimed));
  metric_write_header(out, "postseal_dns_queries_total", "counter",
                      "DNS queries sent to a server.");
  metric_write_value(out, "postseal_dns_queries_total", NULL,
                     (double)SUM(d, dns_queries));
  metric_write_header(out, "postseal_dns_lookups_total", "counter",
                      "DNS lookups by how they were answered: from the "
                      "cache, by a new query, by joining one in flight.");
  render_labelled(out, "postseal_dns_lookups_total", "source", "cache",
                  (double)SUM(d, dns_cache_hits));
  render_labelled(out, "postseal_dns_lookups_total", "source", "query",
                  (double)SUM(d, dns_cache_misses));
  render_labelled(out, "postseal_dns_lookups_total", "source", "coalesced",
                  (double)SUM(d, dns_coalesced));
  metric_write_header(out, "postseal_dns_failures_total", "counter",
                      "DNS queries that failed temporarily (SERVFAIL, "
                      "timeout, network), and of those the timeouts.");
  render_labelled(out, "postseal_dns_failures_total", "kind", "tempfail",
                  (double)SUM(d, dns_tempfails));
  render_labelled(out, "postseal_dns_failures_total", "kind", "timeout",
                  (double)SUM(d, dns_timeouts));
}

static void render_spool(struct daemon *d, struct buf *out) {
  metric_write_header(out, "postseal_spool_commits_total", "counter",
                      "Records made durable by group commits.");
  metric_write_value(out, "postseal_spool_commits_total", NULL,
                     (double)SUM(d, spool_commits));
  metric_write_header(out, "postseal_spool_commit_errors_total", "counter",
                      "Records whose group commit failed (write or fsync).");
  metric_write_value(out, "postseal_spool_commit_errors_total", NULL,
                     (double)SUM(d, spool_commit_errors));
  struct metric_hist batch = {0}, latency = {0};
  for (unsigned i = 0; i < d->num_workers; i++) {
    metric_hist_add_into(&batch, &d->workers[i].m.batch_size,
                         &daemon_batch_spec);
    metric_hist_add_into(&latency, &d->workers[i].m.commit_seconds,
                         &daemon_latency_spec);
  }
  metric_write_header(out, "postseal_spool_commit_batch_records", "histogram",
                      "Records per group commit (one write, one fdatasync).");
  metric_write_hist(out, "postseal_spool_commit_batch_records", NULL, &batch,
                    &daemon_batch_spec);
  metric_write_header(out, "postseal_spool_commit_duration_seconds",
                      "histogram",
                      "Time from write submission to fdatasync "
                      "completion of a group commit.");
  metric_write_hist(out, "postseal_spool_commit_duration_seconds", NULL,
                    &latency, &daemon_latency_spec);
}

/* render_tls: handshakes by direction, result and version; outbound policy
 * failures; AUTH outcomes. */
static void render_tls(struct daemon *d, struct buf *out) {
  static const char *const dirs[2] = {"inbound", "outbound"};
  static const char *const results[TLS_HS_COUNT] = {"full", "resumed",
                                                    "failed"};
  static const char *const versions[2] = {"TLSv1.2", "TLSv1.3"};
  static const char *const failures[TLS_PF_COUNT] = {
      "starttls_not_offered", "handshake", "verify", "dane"};
  static const char *const auths[AUTH_RESULT_COUNT] = {"success", "failure",
                                                       "blocked"};
  char label[160];
  metric_write_header(out, "postseal_tls_handshakes_total", "counter",
                      "TLS handshakes, by direction and result (full, "
                      "resumed, failed).");
  for (int dir = 0; dir < 2; dir++) {
    for (int r = 0; r < TLS_HS_COUNT; r++) {
      snprintf(label, sizeof(label), "direction=\"%s\",result=\"%s\"",
               dirs[dir], results[r]);
      metric_write_value(out, "postseal_tls_handshakes_total", label,
                         (double)SUM(d, tls_handshakes[dir][r]));
    }
  }
  metric_write_header(out, "postseal_tls_sessions_total", "counter",
                      "Completed TLS handshakes, by direction and protocol "
                      "version.");
  for (int dir = 0; dir < 2; dir++) {
    for (int v = 0; v < 2; v++) {
      snprintf(label, sizeof(label), "direction=\"%s\",version=\"%s\"",
               dirs[dir], versions[v]);
      metric_write_value(out, "postseal_tls_sessions_total", label,
                         (double)SUM(d, tls_versions[dir][v]));
    }
  }
  metric_write_header(out, "postseal_tls_policy_failures_total", "counter",
                      "Outbound connections that the TLS policy stopped "
                      "(mail deferred, never sent in clear), by failure.");
  for (int f = 0; f < TLS_PF_COUNT; f++) {
    render_labelled(out, "postseal_tls_policy_failures_total", "type",
                    failures[f], (double)SUM(d, tls_policy_failures[f]));
  }
  metric_write_header(out, "postseal_auth_attempts_total", "counter",
                      "SMTP AUTH attempts, by result (blocked: refused by "
                      "the failed-attempt limit).");
  for (int a = 0; a < AUTH_RESULT_COUNT; a++) {
    render_labelled(out, "postseal_auth_attempts_total", "result", auths[a],
                    (double)SUM(d, auth_attempts[a]));
  }
}

/* render_mtasts: MTA-STS lookups by result, policy fetches, the cache. */
static void render_mtasts(struct daemon *d, struct buf *out) {
  static const char *const results[3] = {"none", "policy", "tempfail"};
  metric_write_header(out, "postseal_mta_sts_lookups_total", "counter",
                      "MTA-STS policy lookups for delivery, by result "
                      "(policy: a fresh or cached policy applied).");
  for (int k = 0; k < 3; k++) {
    render_labelled(out, "postseal_mta_sts_lookups_total", "result", results[k],
                    (double)SUM(d, mtasts_results[k]));
  }
  metric_write_header(out, "postseal_mta_sts_fetches_total", "counter",
                      "MTA-STS policy fetches over HTTPS, by outcome.");
  uint64_t fetches = SUM(d, mtasts_fetches);
  uint64_t failures = SUM(d, mtasts_fetch_failures);
  render_labelled(out, "postseal_mta_sts_fetches_total", "result", "started",
                  (double)fetches);
  render_labelled(out, "postseal_mta_sts_fetches_total", "result", "failed",
                  (double)failures);
  metric_write_header(out, "postseal_mta_sts_cached_domains", "gauge",
                      "Policy domains in the MTA-STS cache.");
  metric_write_value(out, "postseal_mta_sts_cached_domains", NULL,
                     (double)mtasts_cache_entries(d));
}

/* render_throttle: the shared per-destination throttle (throttle.c). */
static void render_throttle(struct daemon *d, struct buf *out) {
  metric_write_header(out, "postseal_throttle_decisions_total", "counter",
                      "Throttle decisions for throttled destinations: "
                      "allowed (one per message sent), deferred (one per "
                      "full window a destination waited for).");
  render_labelled(out, "postseal_throttle_decisions_total", "result", "allowed",
                  (double)SUM(d, thr_decisions[0]));
  render_labelled(out, "postseal_throttle_decisions_total", "result",
                  "deferred", (double)SUM(d, thr_decisions[1]));
  uint64_t fallback = 0;
  for (unsigned i = 0; i < d->num_workers; i++) {
    fallback |= METRIC_GET(d->workers[i].m.thr_fallback);
  }
  render_counter(out, "postseal_throttle_fallback", "gauge",
                 "1 while some worker decides locally because Redis failed "
                 "or was slow; 0 while Redis decides.",
                 (double)(fallback != 0));
  render_counter(out, "postseal_throttle_fallbacks_total", "counter",
                 "Switches of a worker to the local fallback.",
                 (double)SUM(d, thr_fallbacks));
  render_counter(out, "postseal_throttle_redis_errors_total", "counter",
                 "Redis failures: connect, I/O, protocol, error replies, "
                 "timeouts.",
                 (double)SUM(d, thr_redis_errors));
}

/* render_tlsrpt: TLS reporting (RFC 8460): sessions counted, domains
 * tracked this period, what was dropped, report-time outcomes. */
static void render_tlsrpt(struct daemon *d, struct buf *out) {
  static const char *const drops[TLSRPT_DROP_COUNT] = {
      "domain", "policy", "failure_detail", "memory"};
  static const char *const outcomes[TLSRPT_OUT_COUNT] = {
      "queued",    "no_record",     "invalid_record",
      "no_mailto", "lookup_failed", "error"};
  metric_write_header(out, "postseal_tlsrpt_sessions_total", "counter",
                      "Outbound TLS sessions counted for TLS reports, by "
                      "result.");
  render_labelled(out, "postseal_tlsrpt_sessions_total", "result", "successful",
                  (double)SUM(d, tlsrpt_sessions[0]));
  render_labelled(out, "postseal_tlsrpt_sessions_total", "result", "failed",
                  (double)SUM(d, tlsrpt_sessions[1]));
  metric_write_header(out, "postseal_tlsrpt_domains", "gauge",
                      "Policy domains with sessions in the current report "
                      "period (summed over threads).");
  metric_write_value(out, "postseal_tlsrpt_domains", NULL,
                     (double)SUM(d, tlsrpt_domains));
  metric_write_header(out, "postseal_tlsrpt_dropped_total", "counter",
                      "Sessions a TLS report could not keep in full, by "
                      "limit.");
  for (int k = 0; k < TLSRPT_DROP_COUNT; k++) {
    render_labelled(out, "postseal_tlsrpt_dropped_total", "what", drops[k],
                    (double)SUM(d, tlsrpt_dropped[k]));
  }
  metric_write_header(out, "postseal_tlsrpt_reports_total", "counter",
                      "Policy domains at report time, by outcome (queued: "
                      "a report was queued to the domain's rua).");
  for (int k = 0; k < TLSRPT_OUT_COUNT; k++) {
    render_labelled(out, "postseal_tlsrpt_reports_total", "result", outcomes[k],
                    (double)SUM(d, tlsrpt_reports[k]));
  }
}

/* render_dmarcrpt: DMARC aggregate reports (RFC 7489 §7.2): messages
 * counted, domains tracked this period, what was dropped, report-time
 * outcomes, rua URIs skipped. */
static void render_dmarcrpt(struct daemon *d, struct buf *out) {
  static const char *const drops[DMARCRPT_DROP_COUNT] = {"domain", "row",
                                                         "memory"};
  static const char *const outcomes[DMARCRPT_OUT_COUNT] = {"queued", "no_rcpt",
                                                           "error"};
  static const char *const skips[DMARCRPT_SKIP_COUNT] = {
      "unusable", "external_refused", "external_lookup_failed", "size"};
  metric_write_header(out, "postseal_dmarcrpt_messages_total", "counter",
                      "Inbound messages counted for DMARC aggregate "
                      "reports.");
  metric_write_value(out, "postseal_dmarcrpt_messages_total", NULL,
                     (double)SUM(d, dmarcrpt_messages));
  metric_write_header(out, "postseal_dmarcrpt_domains", "gauge",
                      "Policy domains with messages in the current DMARC "
                      "report period (summed over threads).");
  metric_write_value(out, "postseal_dmarcrpt_domains", NULL,
                     (double)SUM(d, dmarcrpt_domains));
  metric_write_header(out, "postseal_dmarcrpt_dropped_total", "counter",
                      "Messages a DMARC report could not count, by limit.");
  for (int k = 0; k < DMARCRPT_DROP_COUNT; k++) {
    render_labelled(out, "postseal_dmarcrpt_dropped_total", "what", drops[k],
                    (double)SUM(d, dmarcrpt_dropped[k]));
  }
  metric_write_header(out, "postseal_dmarcrpt_reports_total", "counter",
                      "Policy domains at DMARC report time, by outcome "
                      "(queued: a report was queued to the domain's rua).");
  for (int k = 0; k < DMARCRPT_OUT_COUNT; k++) {
    render_labelled(out, "postseal_dmarcrpt_reports_total", "result",
                    outcomes[k], (double)SUM(d, dmarcrpt_reports[k]));
  }
  metric_write_header(out, "postseal_dmarcrpt_rua_skipped_total", "counter",
                      "DMARC rua URIs not sent a report, by reason "
                      "(external_refused: no RFC 7489 7.1 authorisation).");
  for (int k = 0; k < DMARCRPT_SKIP_COUNT; k++) {
    render_labelled(out, "postseal_dmarcrpt_rua_skipped_total", "reason",
                    skips[k], (double)SUM(d, dmarcrpt_skipped[k]));
  }
}

/* render_keys: the age of each DKIM key and the expiry of each S/MIME
 * signing certificate, so rotation and renewal can be alerted on. */
static void render_keys(const struct runtime *rt, struct buf *out,
                        int64_t now) {
  char labels[1024], l1[300], l2[300], l3[64];
  metric_write_header(out, "postseal_dkim_key_age_seconds", "gauge",
                      "Seconds since each DKIM key started signing "
                      "(NOT_BEFORE, else its file's modification time).");
  size_t n = rt != NULL ? dkim_runtime_num_keys(rt->dkim) : 0;
  for (size_t i = 0; i < n; i++) {
    const char *domain, *selector, *alg;
    int64_t since;
    dkim_runtime_key(rt->dkim, i, &domain, &selector, &alg, &since);
    metric_label(l1, sizeof(l1), "domain", domain);
    metric_label(l2, sizeof(l2), "selector", selector);
    metric_label(l3, sizeof(l3), "algorithm", alg);
    snprintf(labels, sizeof(labels), "%s,%s,%s", l1, l2, l3);
    metric_write_value(out, "postseal_dkim_key_age_seconds", labels,
                       (double)(now - since));
  }
  metric_write_header(out, "postseal_smime_cert_expiry_timestamp_seconds",
                      "gauge",
                      "notAfter of each S/MIME signing certificate "
                      "(smime.sign), seconds since the epoch.");
  n = rt != NULL ? smime_runtime_num_signers(rt->smime) : 0;
  for (size_t i = 0; i < n; i++) {
    const char *who;
    int64_t not_after;
    smime_runtime_signer(rt->smime, i, &who, &not_after);
    metric_label(labels, sizeof(labels), "who", who);
    metric_write_value(out, "postseal_smime_cert_expiry_timestamp_seconds",
                       labels, (double)not_after);
  }
}

/* render_smime: the S/MIME gateway stage: what it did to trusted
 * clients' mail, and inbound signers by verdict. */
static void render_smime(struct daemon *d, struct buf *out) {
  static const char *const verdicts[SMIME_VERDICTS] = {
      "permerror", "pass",    "bad_signature", "bad_digest",    "no_cert",
      "untrusted", "expired", "key_usage",     "from_mismatch", "unsupported"};
  render_counter(out, "postseal_smime_signed_total", "counter",
                 "Messages signed by the gateway.",
                 (double)SUM(d, smime_signed));
  render_counter(out, "postseal_smime_encrypted_total", "counter",
                 "Messages encrypted by the gateway.",
                 (double)SUM(d, smime_encrypted));
  render_counter(out, "postseal_smime_encrypted_recipients_total", "counter",
                 "Certificates the encrypted messages were encrypted to.",
                 (double)SUM(d, smime_encrypted_rcpts));
  render_counter(out, "postseal_smime_not_encrypted_total", "counter",
                 "Messages sent unencrypted under if-possible: a recipient "
                 "had no certificate.",
                 (double)SUM(d, smime_not_encrypted));
  render_counter(out, "postseal_smime_refused_total", "counter",
                 "Messages refused (550) under required: a recipient had no "
                 "certificate.",
                 (double)SUM(d, smime_refused));
  render_counter(out, "postseal_smime_errors_total", "counter",
                 "Messages that could not be signed or encrypted (answered "
                 "451).",
                 (double)SUM(d, smime_errors));
  render_counter(out, "postseal_smime_sign_refused_total", "counter",
                 "Messages not signed: the From address has a signer but the "
                 "client may not send as it.",
                 (double)SUM(d, smime_sign_refused));
  render_counter(out, "postseal_smime_untouched_total", "counter",
                 "Trusted clients' mail left as it came (no signer or policy "
                 "for its From, or already S/MIME).",
                 (double)SUM(d, smime_untouched));
  metric_write_header(out, "postseal_smime_verify_total", "counter",
                      "Signers of inbound S/MIME mail, by verdict "
                      "(permerror: the message did not parse).");
  for (int k = 0; k < SMIME_VERDICTS; k++) {
    render_labelled(out, "postseal_smime_verify_total", "result", verdicts[k],
                    (double)SUM(d, smime_verify[k]));
  }
}

/* render_dkim: signatures made, signing batches and their time,
 * verification verdicts. */
static void render_dkim(struct daemon *d, struct buf *out) {
  static const char *const algs[2] = {"rsa-sha256", "ed25519-sha256"};
  static const char *const verdicts[DKIM_VERDICTS] = {
      "none", "pass", "fail", "neutral", "temperror", "permerror"};
  metric_write_header(out, "postseal_dkim_signatures_total", "counter",
                      "DKIM signatures made, by algorithm.");
  for (int a = 0; a < 2; a++) {
    render_labelled(out, "postseal_dkim_signatures_total", "algorithm", algs[a],
                    (double)SUM(d, dkim_signatures[a]));
  }
  metric_write_header(out, "postseal_dkim_sign_errors_total", "counter",
                      "Messages that could not be signed (answered 451).");
  metric_write_value(out, "postseal_dkim_sign_errors_total", NULL,
                     (double)SUM(d, dkim_sign_errors));
  metric_write_header(out, "postseal_dkim_unsigned_total", "counter",
                      "Mail from trusted clients with no signing key for "
                      "its From domain.");
  metric_write_value(out, "postseal_dkim_unsigned_total", NULL,
                     (double)SUM(d, dkim_unsigned));
  struct metric_hist batch = {0}, secs = {0};
  for (unsigned i = 0; i < d->num_workers; i++) {
    metric_hist_add_into(&batch, &d->workers[i].m.dkim_batch,
                         &daemon_batch_spec);
    metric_hist_add_into(&secs, &d->workers[i].m.dkim_sign_seconds,
                         &dkim_sign_seconds_spec);
  }
  metric_write_header(out, "postseal_dkim_sign_batch_messages", "histogram",
                      "Messages signed together in one loop turn.");
  metric_write_hist(out, "postseal_dkim_sign_batch_messages", NULL, &batch,
                    &daemon_batch_spec);
  metric_write_header(out, "postseal_dkim_sign_batch_duration_seconds",
                      "histogram", "Time to hash and sign one batch.");
  metric_write_hist(out, "postseal_dkim_sign_batch_duration_seconds", NULL,
                    &secs, &dkim_sign_seconds_spec);
  metric_write_header(out, "postseal_dkim_verify_total", "counter",
                      "Inbound DKIM verdicts, by result (none: a message "
                      "without signatures).");
  for (int k = 0; k < DKIM_VERDICTS; k++) {
    render_labelled(out, "postseal_dkim_verify_total", "result", verdicts[k],
                    (double)SUM(d, dkim_verify[k]));
  }
}

/* render_spf_dmarc: inbound SPF and DMARC results, DMARC actions. */
static void render_spf_dmarc(struct daemon *d, struct buf *out) {
  static const char *const spf[7] = {
      "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"};
  static const char *const dmarc[5] = {"none", "pass", "fail", "temperror",
                                       "permerror"};
  static const char *const actions[3] = {"none", "quarantine", "reject"};
  metric_write_header(out, "postseal_spf_results_total", "counter",
                      "SPF checks of inbound MAIL FROM, by result.");
  for (int k = 0; k < 7; k++) {
    render_labelled(out, "postseal_spf_results_total", "result", spf[k],
                    (double)SUM(d, spf_results[k]));
  }
  metric_write_header(out, "postseal_dmarc_results_total", "counter",
                      "DMARC evaluations of inbound messages, by result.");
  for (int k = 0; k < 5; k++) {
    render_labelled(out, "postseal_dmarc_results_total", "result", dmarc[k],
                    (double)SUM(d, dmarc_results[k]));
  }
  metric_write_header(out, "postseal_dmarc_actions_total", "counter",
                      "What DMARC made of inbound messages: none "
                      "(delivered), quarantine (held), reject (550).");
  for (int k = 0; k < 3; k++) {
    render_labelled(out, "postseal_dmarc_actions_total", "action", actions[k],
                    (double)SUM(d, dmarc_actions[k]));
  }
}

void metrics_render(struct daemon *d, const struct config *cfg,
                    struct buf *out) {
  render_sessions(d, out);
  render_smtp(d, out);
  render_messages(d, out);
  render_spool(d, out);
  render_delivery(d, out);
  render_dns(d, out);
  render_tls(d, out);
  render_mtasts(d, out);
  render_throttle(d, out);
  render_tlsrpt(d, out);
  render_dkim(d, out);
  render_smime(d, out);
  render_keys(cfg_runtime(cfg), out, daemon_now_ms() / 1000);
  render_spf_dmarc(d, out);
  render_dmarcrpt(d, out);
  metric_write_header(out, "postseal_threads", "gauge",
                      "Event loop threads (one io_uring each).");
  metric_write_value(out, "postseal_threads", NULL, (double)d->num_workers);
  metric_write_header(out, "postseal_start_time_seconds", "gauge",
                      "Start time of the daemon since the Unix epoch.");
  metric_write_value(out, "postseal_start_time_seconds", NULL,
                     (double)(d->start_ms / 1000));
}

static void metrics_respond(struct conn *c, int status, const char *reason,
                            const char *type, const struct buf *body,
                            int head_only) {
  struct buf resp = {0};
  buf_printf(&resp,
             "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
             "Connection: close\r\n\r\n",
             status, reason, type, body ? body->len : 0);
  if (body != NULL && !head_only) {
    buf_append(&resp, body->data, body->len);
  }
  conn_send(c, resp.data, resp.len);
  buf_free(&resp);
  conn_close(c);
}

void metrics_on_input(struct conn *c, const uint8_t *in, size_t in_len) {
  if (buf_append(&c->http_in, in, in_len) != 0) {
    conn_close(c);
    return;
  }
  struct http_request req;
  enum http_parse_result rc =
      http_request_parse((const char *)c->http_in.data, c->http_in.len, &req);
  if (rc == HTTP_PARSE_NEED_MORE) {
    return;
  }
  const char *text = "text/plain; charset=utf-8";
  if (rc == HTTP_PARSE_TOO_LARGE) {
    metrics_respond(c, 431, "Request Header Fields Too Large", text, NULL, 0);
    return;
  }
  if (rc != HTTP_PARSE_DONE) {
    metrics_respond(c, 400, "Bad Request", text, NULL, 0);
    return;
  }
  int head = strcmp(req.method, "HEAD") == 0;
  if (!head && strcmp(req.method, "GET") != 0) {
    metrics_respond(c, 405, "Method Not Allowed", text, NULL, 0);
    return;
  }
  if (strcmp(req.target, "/metrics") != 0 &&
      strncmp(req.target, "/metrics?", 9) != 0) {
    metrics_respond(c, 404, "Not Found", text, NULL, 0);
    return;
  }
  struct buf body = {0};
  metrics_render(c->w->d, c->w->cfg, &body);
  metrics_respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8",
                  &body, head);
  buf_free(&body);
}
