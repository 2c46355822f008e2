/* core/daemon/spfglue.c — SPF (policy/spf.h) on the worker's resolver.
 *
 * A check starts at MAIL FROM for a client that is not trusted (not in
 * mynetworks, not authenticated) and runs while the client sends its
 * recipients and data: its lookups go one after the other through the
 * worker's cached resolver. At the end of DATA the DKIM stage takes the
 * run from the connection and waits for it if it is still going. A check
 * is bounded by spf.timeout: past it, every further lookup counts as
 * failed (temperror). A new MAIL FROM, or the connection's end, drops the
 * run of the previous transaction. Two identities are checked one after
 * the other: MAIL FROM, the one DMARC uses, then HELO (RFC 7208 §2.3),
 * for Authentication-Results; for the null sender the first already is
 * postmaster@HELO, so it is the only one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/daemon/daemon.h"
#include "core/log.h"

static void spf_run_pump(struct spf_run *r);

static void spf_run_on_answer(void *arg, const struct dns_answer *a) {
  struct spf_run *r = arg;
  r->handle = 0;
  spf_answer(r->phase == 0 ? r->q : r->qh, a);
  spf_run_pump(r);
}

/* spf_run_pump steps the check until it waits for a lookup or ends. */
static void spf_run_pump(struct spf_run *r) {
  struct worker *w = r->w;
  for (;;) {
    const char *name;
    uint16_t type;
    struct spf_query *q = r->phase == 0 ? r->q : r->qh;
    if (q == NULL || spf_step(q, &name, &type) == SPF_DONE) {
      if (r->phase == 0) {
        r->phase = 1; /* MAIL FROM done: HELO next */
        continue;
      }
      break;
    }
    if (w->dns != NULL && !w->stopping && w->now_ms < r->deadline_ms) {
      r->handle = dns_query(w->dns, name, type, spf_run_on_answer, r);
      if (r->handle != 0) {
        return;
      }
    }
    struct dns_answer a = {.status = DNS_TEMPFAIL,
                           .type = type,
                           .why = "spf.timeout or no resolver"};
    spf_answer(q, &a);
  }
  r->done = 1;
  r->result = spf_result(r->q);
  r->helo_result = r->qh != NULL ? spf_result(r->qh) : SPF_NONE;
  METRIC_ADD(w->m.spf_results[r->result], 1);
  if (r->on_done != NULL) {
    void (*cb)(void *) = r->on_done;
    r->on_done = NULL;
    cb(r->arg);
  }
}

void spf_run_free(struct spf_run *r) {
  if (r == NULL) {
    return;
  }
  if (r->handle != 0 && r->w->dns != NULL) {
    dns_cancel(r->w->dns, r->handle);
  }
  spf_free(r->q);
  spf_free(r->qh);
  free(r);
}

void spf_run_start(struct conn *c) {
  struct worker *w = c->w;
  spf_run_free(c->spf);
  c->spf = NULL;
  const char *helo = smtp_server_helo(c->smtp);
  struct spf_request req = {
      .client = (const struct sockaddr *)&c->peer,
      .sender = smtp_server_envelope(c->smtp)->sender,
      .helo = helo != NULL ? helo : "",
      .receiver = w->cfg->hostname,
      .now = w->now_ms / 1000,
      .check_helo = 0,
  };
  struct spf_run *r = calloc(1, sizeof(*r));
  if (r == NULL || (r->q = spf_new(&req)) == NULL) {
    free(r);
    return; /* no result: the A-R field says nothing about SPF */
  }
  /* The null sender's check already was postmaster@HELO's (§2.4). */
  if (req.sender[0] != '\0') {
    req.check_helo = 1;
    r->qh = spf_new(&req); /* NULL (memory): the HELO result is left out */
  }
  r->w = w;
  r->deadline_ms = w->now_ms + (int64_t)w->cfg->spf_timeout * 1000;
  c->spf = r;
  spf_run_pump(r);
}
