/* core/daemon/mtasts.c — MTA-STS policy discovery for delivery (RFC 8461
 * §3, §5.1); the contract is in daemon.h.
 *
 * Flow of one lookup (a "pending", shared by the lookups of its domain on
 * its worker):
 *   TXT _mta-sts.<domain> (dns_query) -> the id
 *     same id as the cached policy: answer with it (and, past half its
 *       max_age, refresh it in the background);
 *     no record, a bad one, a failure: the cached policy if any, else
 *       NONE (TEMPFAIL for a temporary DNS failure);
 *     a new id: addresses of mta-sts.<domain> (dns_route_host), then a
 *       fetch on the local pool (crypto/https.h, blocking), parsed there
 *       (policy/mta_sts.h); back on the worker, cached and answered. A
 *       failed fetch answers with the cached policy, else NONE (§3.3),
 *       and the id is not fetched again for MTA_STS_RETRY_AFTER.
 *
 * Threads: the pendings of a worker are its own (no lock); the cache is
 * shared and locked inside; a fetch job reads only its own copy of the
 * host and addresses. At most MTASTS_MAX_FETCHES jobs per worker are on
 * the pool (it also runs Maildir deliveries and AUTH checks); more wait
 * in the worker's list. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "crypto/https.h"
#include "policy/mta_sts.h"

#define MTASTS_PATH "/.well-known/mta-sts.txt" /* RFC 8461 §3.2 */
#define MTASTS_MAX_FETCHES                                                     \
  1                             /* per worker, on the pool at once: the pool   \
                                   has workers + 2 threads, so fetches never   \
                                   hold all of them (AUTH, Maildir) */
#define MTASTS_MAX_PENDING 4096 /* per worker: lookups of distinct domains */
#define MTASTS_CONNECT_TIMEOUT_MS 5000
#define MTASTS_FETCH_TIMEOUT_MS                                                \
  20000 /* RFC 8461 §3.3 suggests a minute; the                               \
           pool is shared, so less */
#define MTASTS_DETAIL_LEN 512

_Static_assert(sizeof(((struct worker_metrics *)0)->mtasts_results) /
                       sizeof(uint64_t) ==
                   MTASTS_TEMPFAIL + 1,
               "one counter per mtasts_status");

enum pending_state {
  P_TXT,    /* the TXT query runs */
  P_ADDR,   /* the address lookup of mta-sts.<domain> runs */
  P_QUEUED, /* waits for a fetch slot */
  P_FETCH,  /* a job is on the pool */
};

struct mtasts_waiter {
  struct mtasts_waiter *next;
  mtasts_cb cb;
  void *arg;
};

struct mtasts_pending {
  struct mtasts_pending *next; /* the worker's list, oldest first */
  struct worker *w;
  enum pending_state state;
  int answered; /* waiters had their answer: a background refresh */
  char domain[MTA_STS_MAX_NAME + 1]; /* lower case, no trailing dot */
  char id[MTA_STS_MAX_ID + 1];       /* the TXT record's */
  uint64_t dns_handle;               /* 0: none running */
  struct mtasts_waiter *waiters;
  size_t num_addrs;
  struct sockaddr_storage addrs[DNS_ROUTE_MAX_ADDRS];
};

/* A fetch on the pool; the pool sees only lj. */
struct mtasts_job {
  struct local_job lj; /* first */
  struct mtasts_pending *p;
  struct tls_ctx *tls; /* referenced */
  uint16_t port;
  char host[MTA_STS_MAX_NAME + 16];
  size_t num_addrs;
  struct sockaddr_storage addrs[DNS_ROUTE_MAX_ADDRS];
  int ok;
  struct mta_sts_policy policy;
  char err[1024];
};

struct mtasts_worker {
  struct mtasts_pending *pending;
  unsigned num_pending;
  unsigned num_fetching; /* jobs on the pool (atomic for mtasts_idle) */
};

struct mtasts {
  struct mta_sts_cache *cache;
  struct mtasts_worker workers[DAEMON_MAX_WORKERS];
};

const char *mtasts_status_name(enum mtasts_status s) {
  switch (s) {
  case MTASTS_NONE:
    return "none";
  case MTASTS_POLICY:
    return "policy";
  case MTASTS_TEMPFAIL:
    return "tempfail";
  }
  return "?";
}

/* now_s: the cache's clock, monotonic seconds (the cache lives in memory
 * only, so a step of the wall clock must not age it). */
static int64_t now_s(void) {
  return daemon_mono_ns() / 1000000000;
}

/* mtasts_get returns the daemon's state, made on first use (two workers
 * racing: one wins, the other frees its copy). NULL out of memory. */
static struct mtasts *mtasts_get(struct daemon *d) {
  struct mtasts *m = __atomic_load_n(&d->mtasts, __ATOMIC_ACQUIRE);
  if (m != NULL) {
    return m;
  }
  m = calloc(1, sizeof(*m));
  if (m == NULL || (m->cache = mta_sts_cache_new(0)) == NULL) {
    free(m);
    return NULL;
  }
  struct mtasts *expected = NULL;
  if (!__atomic_compare_exchange_n(&d->mtasts, &expected, m, 0,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    mta_sts_cache_free(m->cache);
    free(m);
    return expected;
  }
  return m;
}

static struct mtasts_worker *mw_of(struct worker *w) {
  return &__atomic_load_n(&w->d->mtasts, __ATOMIC_ACQUIRE)->workers[w->index];
}

static void log_event(const struct mtasts_pending *p, const char *result,
                      const char *detail) {
  struct log_rec r;
  log_begin(&r, "mta-sts");
  log_str(&r, "domain", p->domain);
  if (p->id[0] != '\0') {
    log_str(&r, "id", p->id);
  }
  log_str(&r, "result", result);
  log_str(&r, "detail", detail);
  log_end(&r);
}

/* pending_answer calls every waiter once. A callback may start lookups
 * (they do not join this pending any more) and cancel waiters. */
static void pending_answer(struct mtasts_pending *p, enum mtasts_status st,
                           const struct mta_sts_policy *policy,
                           const char *detail) {
  p->answered = 1;
  while (p->waiters != NULL) {
    struct mtasts_waiter *wt = p->waiters;
    p->waiters = wt->next;
    METRIC_ADD(p->w->m.mtasts_results[st], 1);
    wt->cb(wt->arg, st, st == MTASTS_POLICY ? policy : NULL, detail);
    free(wt);
  }
}

/* pending_end unlinks and frees a pending whose work is over. */
static void pending_end(struct mtasts_pending *p) {
  struct mtasts_worker *mw = mw_of(p->w);
  for (struct mtasts_pending **pp = &mw->pending; *pp != NULL;
       pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      mw->num_pending--;
      break;
    }
  }
  pending_answer(p, MTASTS_TEMPFAIL, NULL, "lookup ended unanswered");
  free(p);
}

/* pending_fallback answers without a fresh policy (RFC 8461 §5.1): the
 * cached one while it lives, else none (or tempfail), and ends. */
static void pending_fallback(struct mtasts_pending *p,
                             enum mtasts_status if_uncached, const char *why) {
  struct mta_sts_cached cached;
  char detail[MTASTS_DETAIL_LEN];
  struct mtasts *m = __atomic_load_n(&p->w->d->mtasts, __ATOMIC_ACQUIRE);
  if (!p->answered &&
      mta_sts_cache_get(m->cache, &cached, p->domain, now_s())) {
    snprintf(detail, sizeof(detail), "cached policy id %s (%.400s)", cached.id,
             why);
    pending_answer(p, MTASTS_POLICY, &cached.policy, detail);
  } else if (!p->answered) {
    pending_answer(p, if_uncached, NULL, why);
  }
  pending_end(p);
}

static void fetch_kick(struct worker *w);

/* pending_fetch_failed: the new id's policy could not be had (§3.3): not
 * fetched again for a while; the cached one, else none. */
static void pending_fetch_failed(struct mtasts_pending *p, const char *why) {
  struct mtasts *m = __atomic_load_n(&p->w->d->mtasts, __ATOMIC_ACQUIRE);
  char detail[MTASTS_DETAIL_LEN];
  snprintf(detail, sizeof(detail), "policy fetch failed: %.440s", why);
  METRIC_ADD(p->w->m.mtasts_fetch_failures, 1);
  mta_sts_cache_note_failure(m->cache, p->domain, p->id, now_s());
  log_event(p, "fetch_failed", detail);
  pending_fallback(p, MTASTS_NONE, detail);
}

/* ---- the fetch, on the pool ---- */

static void job_run(struct local_job *lj) {
  struct mtasts_job *job = (struct mtasts_job *)lj;
  struct https_request req = {
      .tls = job->tls,
      .host = job->host,
      .port = job->port,
      .path = MTASTS_PATH,
      .addrs = job->addrs,
      .num_addrs = job->num_addrs,
      .connect_timeout_ms = MTASTS_CONNECT_TIMEOUT_MS,
      .timeout_ms = MTASTS_FETCH_TIMEOUT_MS,
      .max_body = MTA_STS_MAX_POLICY_LEN,
      .want_media_type = "text/plain", /* RFC 8461 §3.2 */
  };
  struct https_response resp;
  char why[HTTPS_ERR_LEN];
  if (https_get(&req, &resp, why, sizeof(why)) != 0) {
    snprintf(job->err, sizeof(job->err), "https://%s%s: %s", job->host,
             MTASTS_PATH, why);
  } else if (mta_sts_policy_parse(&job->policy, why, sizeof(why),
                                  resp.body.data, resp.body.len) != 0) {
    snprintf(job->err, sizeof(job->err), "invalid policy from %s: %s",
             resp.peer, why);
  } else {
    job->ok = 1;
  }
  https_response_cleanup(&resp);
  tls_ctx_free(job->tls);
  job->tls = NULL;
}

/* job_done, back on the worker: cache and answer. */
static void job_done(struct worker *w, struct local_job *lj) {
  struct mtasts_job *job = (struct mtasts_job *)lj;
  struct mtasts_pending *p = job->p;
  struct mtasts *m = __atomic_load_n(&w->d->mtasts, __ATOMIC_ACQUIRE);
  struct mtasts_worker *mw = &m->workers[w->index];
  __atomic_sub_fetch(&mw->num_fetching, 1, __ATOMIC_RELEASE);
  if (!job->ok) {
    pending_fetch_failed(p, job->err);
  } else {
    char detail[MTASTS_DETAIL_LEN];
    snprintf(detail, sizeof(detail),
             "fetched policy id %s: mode %s, %zu mx, "
             "max_age %u",
             p->id, mta_sts_mode_name(job->policy.mode), job->policy.num_mx,
             job->policy.max_age);
    if (mta_sts_cache_put(m->cache, p->domain, p->id, &job->policy, now_s()) !=
        0) {
      log_msg("error", "mta-sts: out of memory caching %s", p->domain);
    }
    log_event(p, "fetched", detail);
    if (!p->answered) {
      pending_answer(p, MTASTS_POLICY, &job->policy, detail);
    }
    pending_end(p);
  }
  free(job);
  fetch_kick(w);
}

/* fetch_submit puts a pending's fetch on the pool. */
static void fetch_submit(struct worker *w, struct mtasts_pending *p) {
  struct runtime *rt = cfg_runtime(w->cfg);
  struct mtasts_job *job = calloc(1, sizeof(*job));
  if (job == NULL || rt == NULL || rt->tls_client == NULL) {
    free(job);
    pending_fetch_failed(p, job == NULL ? "out of memory"
                                        : "no TLS client context");
    return;
  }
  job->lj.w = w;
  job->lj.run = job_run;
  job->lj.done = job_done;
  job->p = p;
  job->tls = rt->tls_client;
  tls_ctx_up_ref(job->tls);
  job->port = (uint16_t)w->cfg->tls_mta_sts_port;
  snprintf(job->host, sizeof(job->host), "mta-sts.%s", p->domain);
  job->num_addrs = p->num_addrs;
  memcpy(job->addrs, p->addrs, p->num_addrs * sizeof(p->addrs[0]));
  p->state = P_FETCH;
  __atomic_add_fetch(&mw_of(w)->num_fetching, 1, __ATOMIC_RELEASE);
  METRIC_ADD(w->m.mtasts_fetches, 1);
  local_pool_submit(w->d, &job->lj);
}

/* fetch_kick starts queued fetches while slots are free (oldest first);
 * a stopping worker answers them without fetching. */
static void fetch_kick(struct worker *w) {
  struct mtasts_worker *mw = mw_of(w);
  for (;;) {
    struct mtasts_pending *p = mw->pending;
    while (p != NULL && p->state != P_QUEUED) {
      p = p->next;
    }
    if (p == NULL) {
      return;
    }
    if (w->stopping) {
      pending_fallback(p, MTASTS_TEMPFAIL, "shutting down");
      continue;
    }
    if (mw->num_fetching >= MTASTS_MAX_FETCHES) {
      return;
    }
    fetch_submit(w, p);
  }
}

/* ---- DNS steps, on the worker ---- */

static void on_addr(void *arg, const struct dns_route *route) {
  struct mtasts_pending *p = arg;
  p->dns_handle = 0;
  p->num_addrs = 0;
  for (size_t i = 0; i < route->num_targets; i++) {
    const struct dns_target *t = &route->targets[i];
    for (size_t k = 0; k < t->num_addrs && p->num_addrs < DNS_ROUTE_MAX_ADDRS;
         k++) {
      p->addrs[p->num_addrs++] = t->addrs[k];
    }
  }
  if (route->status != DNS_OK || p->num_addrs == 0) {
    char why[MTA_STS_MAX_NAME + DNS_DETAIL_MAX + 32];
    snprintf(why, sizeof(why), "mta-sts.%s: no address (%s)", p->domain,
             route->detail[0] ? route->detail : dns_status_name(route->status));
    pending_fetch_failed(p, why);
    return;
  }
  p->state = P_QUEUED;
  fetch_kick(p->w);
}

/* start_fetch looks up mta-sts.<domain>; the fetch follows. */
static void start_fetch(struct mtasts_pending *p) {
  char host[MTA_STS_MAX_NAME + 16];
  snprintf(host, sizeof(host), "mta-sts.%s", p->domain);
  p->state = P_ADDR;
  p->dns_handle = dns_route_host(p->w->dns, host, on_addr, p);
  if (p->dns_handle == 0) {
    pending_fetch_failed(p, "out of memory");
  }
}

/* fetch_running: 1 if another pending of this worker is fetching domain. */
static int fetch_running(const struct mtasts_pending *self) {
  for (const struct mtasts_pending *p = mw_of(self->w)->pending; p != NULL;
       p = p->next) {
    if (p != self && p->state != P_TXT &&
        strcmp(p->domain, self->domain) == 0) {
      return 1;
    }
  }
  return 0;
}

/* on_id: the TXT record gave an id (RFC 8461 §3.1). */
static void on_id(struct mtasts_pending *p, const char *id) {
  struct mtasts *m = __atomic_load_n(&p->w->d->mtasts, __ATOMIC_ACQUIRE);
  struct mta_sts_cached cached;
  int64_t now = now_s();
  snprintf(p->id, sizeof(p->id), "%s", id);
  int have = mta_sts_cache_get(m->cache, &cached, p->domain, now);
  if (have && strcmp(cached.id, id) == 0) {
    char detail[MTASTS_DETAIL_LEN];
    snprintf(detail, sizeof(detail), "cached policy id %s", id);
    pending_answer(p, MTASTS_POLICY, &cached.policy, detail);
    /* Refresh a policy past half its life (RFC 8461 §10.2: refresh
     * before it expires), in the background, one fetch at a time. */
    if ((now - cached.fetched_at) * 2 >= (int64_t)cached.policy.max_age &&
        !p->w->stopping && !fetch_running(p) &&
        mta_sts_cache_may_fetch(m->cache, p->domain, id, now)) {
      start_fetch(p);
      return;
    }
    pending_end(p);
    return;
  }
  if (!mta_sts_cache_may_fetch(m->cache, p->domain, id, now)) {
    pending_fallback(p, MTASTS_NONE,
                     "policy fetch for this id failed recently (RFC 8461 "
                     "§3.3: not retried for five minutes)");
    return;
  }
  start_fetch(p);
}

static void on_txt(void *arg, const struct dns_answer *a) {
  struct mtasts_pending *p = arg;
  char why[MTASTS_DETAIL_LEN], id[MTA_STS_MAX_ID + 1];
  p->dns_handle = 0;
  switch (a->status) {
  case DNS_OK: {
    char err[MTA_STS_ERR_LEN];
    enum mta_sts_txt r =
        mta_sts_txt_find(id, err, sizeof(err), a->rrs, a->num_rrs);
    if (r == MTA_STS_TXT_FOUND) {
      on_id(p, id);
      return;
    }
    snprintf(why, sizeof(why), "_mta-sts.%s: %s", p->domain, err);
    pending_fallback(p, MTASTS_NONE, why);
    return;
  }
  case DNS_TEMPFAIL:
    snprintf(why, sizeof(why), "_mta-sts.%s: TXT lookup failed (%s)", p->domain,
             a->why ? a->why : "temporary failure");
    pending_fallback(p, MTASTS_TEMPFAIL, why);
    return;
  default:
    snprintf(why, sizeof(why), "_mta-sts.%s: no TXT record (%s)", p->domain,
             a->why ? a->why : dns_status_name(a->status));
    pending_fallback(p, MTASTS_NONE, why);
    return;
  }
}

/* ---- the interface ---- */

/* pending_find: a pending of domain that new lookups may join. */
static struct mtasts_pending *pending_find(struct mtasts_worker *mw,
                                           const char *domain) {
  for (struct mtasts_pending *p = mw->pending; p != NULL; p = p->next) {
    if (!p->answered && strcmp(p->domain, domain) == 0) {
      return p;
    }
  }
  return NULL;
}

/* pending_new starts the TXT query of a new pending (appended, so the
 * list stays oldest first). NULL if it could not start. */
static struct mtasts_pending *
pending_new(struct worker *w, struct mtasts_worker *mw, const char *key) {
  if (mw->num_pending >= MTASTS_MAX_PENDING) {
    return NULL;
  }
  struct mtasts_pending *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    return NULL;
  }
  p->w = w;
  p->state = P_TXT;
  snprintf(p->domain, sizeof(p->domain), "%s", key);
  char name[MTA_STS_MAX_NAME + 16];
  snprintf(name, sizeof(name), "_mta-sts.%s", key);
  p->dns_handle = dns_query(w->dns, name, DNS_TYPE_TXT, on_txt, p);
  if (p->dns_handle == 0) {
    free(p);
    return NULL;
  }
  struct mtasts_pending **pp = &mw->pending;
  while (*pp != NULL) {
    pp = &(*pp)->next;
  }
  *pp = p;
  mw->num_pending++;
  return p;
}

int mtasts_lookup(struct worker *w, const char *domain, mtasts_cb cb,
                  void *arg) {
  size_t len = strlen(domain);
  if (w->dns == NULL || w->stopping || !mta_sts_domain_valid(domain)) {
    return -1;
  }
  struct mtasts *m = mtasts_get(w->d);
  struct mtasts_waiter *wt = calloc(1, sizeof(*wt));
  if (m == NULL || wt == NULL) {
    free(wt);
    return -1;
  }
  char key[MTA_STS_MAX_NAME + 1];
  len -= len > 0 && domain[len - 1] == '.';
  for (size_t i = 0; i < len; i++) {
    char c = domain[i];
    key[i] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
  }
  key[len] = '\0';
  struct mtasts_worker *mw = &m->workers[w->index];
  struct mtasts_pending *p = pending_find(mw, key);
  if (p == NULL && (p = pending_new(w, mw, key)) == NULL) {
    free(wt);
    return -1;
  }
  wt->cb = cb;
  wt->arg = arg;
  wt->next = p->waiters;
  p->waiters = wt;
  return 0;
}

void mtasts_cancel(struct worker *w, void *arg) {
  struct mtasts *m = __atomic_load_n(&w->d->mtasts, __ATOMIC_ACQUIRE);
  if (m == NULL) {
    return;
  }
  for (struct mtasts_pending *p = m->workers[w->index].pending; p != NULL;
       p = p->next) {
    for (struct mtasts_waiter **pp = &p->waiters; *pp != NULL;) {
      struct mtasts_waiter *wt = *pp;
      if (wt->arg == arg) {
        *pp = wt->next;
        free(wt);
      } else {
        pp = &wt->next;
      }
    }
  }
}

int mtasts_idle(const struct worker *w) {
  struct mtasts *m = __atomic_load_n(&w->d->mtasts, __ATOMIC_ACQUIRE);
  return m == NULL || __atomic_load_n(&m->workers[w->index].num_fetching,
                                      __ATOMIC_ACQUIRE) == 0;
}

size_t mtasts_cache_entries(struct daemon *d) {
  struct mtasts *m = __atomic_load_n(&d->mtasts, __ATOMIC_ACQUIRE);
  if (m == NULL) {
    return 0;
  }
  struct mta_sts_cache_stats st;
  mta_sts_cache_get_stats(m->cache, &st);
  return st.entries;
}

void mtasts_free(struct daemon *d) {
  struct mtasts *m = __atomic_exchange_n(&d->mtasts, NULL, __ATOMIC_ACQ_REL);
  if (m == NULL) {
    return;
  }
  /* The workers are gone: their resolvers dropped the lookups in flight
   * without callbacks, so what is left here is only freed. */
  for (unsigned i = 0; i < DAEMON_MAX_WORKERS; i++) {
    while (m->workers[i].pending != NULL) {
      struct mtasts_pending *p = m->workers[i].pending;
      m->workers[i].pending = p->next;
      while (p->waiters != NULL) {
        struct mtasts_waiter *wt = p->waiters;
        p->waiters = wt->next;
        free(wt);
      }
      free(p);
    }
  }
  mta_sts_cache_free(m->cache);
  free(m);
}
