/* policy/dns.c — the resolver; see dns.h.
 *
 * Three kinds of object:
 *   - an entry is one (name, type) in the cache: PENDING while its query is
 *     in flight (subs wait on it), READY once answered. Entries are counted
 *     (refs): a sub holds one from start until its lookup is freed, a query
 *     in flight holds one. An entry leaves the table when evicted or
 *     expired and is freed when no one holds it any more;
 *   - a lookup is what the caller asked for (a route or a query). It owns
 *     subs, one per (name, type) it needs, and steps when all its pending
 *     subs are answered;
 *   - the ready list holds lookups whose subs are all answered: dns_tick
 *     and dns_dispatch step them, and a finished lookup runs its callback.
 * c-ares callbacks only fill entries and move lookups to the ready list;
 * everything the caller sees happens in dispatch. */
#include "policy/dns.h"

#include <arpa/inet.h>
#include <ares.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "core/netaddr.h"

/* Every query carries an OPT RR: with ARES_FLAG_EDNS, c-ares takes UDP
 * answers up to the size we announce, and if a server answers FORMERR it
 * retries without EDNS by cutting the last 11 octets (our OPT) off. */
#define DNS_QUERY_FLAGS (DNS_QUERY_AD | DNS_QUERY_EDNS)
#define DNS_SWEEP_MS 1000
#define DNS_MIN_HANDLE_BUCKETS 64
#define DNS_MAX_SOCKS (2 * DNS_MAX_SERVERS) /* a UDP and a TCP each */
#define DNS_TCP_DRAIN_MAX 64 /* reads per dns_process_fd (2 per answer) */

/* ---- intrusive lists ---- */

struct dns_link {
  struct dns_link *prev, *next;
};

static void link_init(struct dns_link *h) {
  h->prev = h->next = h;
}

static int link_empty(const struct dns_link *h) {
  return h->next == h;
}

static void link_push_back(struct dns_link *h, struct dns_link *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}

static void link_push_front(struct dns_link *h, struct dns_link *n) {
  n->next = h->next;
  n->prev = h;
  h->next->prev = n;
  h->next = n;
}

static void link_remove(struct dns_link *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->prev = n->next = n;
}

#define LINK_OWNER(ptr, type, member)                                          \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- objects ---- */

enum dns_entry_state { DNS_ENTRY_PENDING, DNS_ENTRY_READY };

struct dns_entry {
  struct dns *dns;
  uint64_t key;
  struct dns_entry *hnext; /* hash chain, while in_table */
  struct dns_link lru;     /* dns->lru, most recently used first */
  int in_table;
  unsigned refs;
  enum dns_entry_state state;
  char name[DNS_NAME_TEXT_MAX]; /* canonical */
  uint16_t type;
  struct dns_link waiters; /* subs, while PENDING */
  /* Moves along the CNAME chain while PENDING (re-queries); the final
   * owner once READY. */
  char owner[DNS_NAME_TEXT_MAX];
  size_t num_cnames;
  uint32_t chain_ttl;
  int secure; /* AD on every answer so far */
  /* READY: */
  enum dns_status status;
  int nxdomain;
  const char *why; /* static; NULL on DNS_OK */
  uint32_t ttl;
  int64_t expires_ms;
  size_t num_rrs;
  struct dns_rr *rrs; /* one allocation with the names and data */
};

struct dns_lookup;

struct dns_sub {
  struct dns_lookup *lookup;
  struct dns_entry *entry; /* held while set */
  struct dns_link wait;    /* entry->waiters, while pending */
  int pending;
};

enum dns_lookup_kind { DNS_LOOKUP_QUERY, DNS_LOOKUP_MX, DNS_LOOKUP_HOST };

enum dns_lookup_step {
  DNS_STEP_FIRST, /* waiting for the MX or the query */
  DNS_STEP_ADDRS, /* waiting for the hosts' AAAA and A */
  DNS_STEP_DONE,  /* decided without (more) answers: status and detail */
};

struct dns_host {
  char name[DNS_NAME_TEXT_MAX];
  uint16_t pref;
  enum dns_status status; /* when not looked up (bad name, literal) */
  const char *why;
  struct sockaddr_storage literal;
  int is_literal;
  struct dns_sub addr[2]; /* AAAA, A */
};

struct dns_lookup {
  uint64_t handle;
  struct dns_lookup *hnext; /* dns->handles chain */
  struct dns_link ready;    /* dns->ready, while queued */
  int queued;
  enum dns_lookup_kind kind;
  enum dns_lookup_step step;
  size_t num_pending;
  dns_route_cb route_cb;
  dns_answer_cb answer_cb;
  void *arg;
  char name[DNS_NAME_TEXT_MAX];
  uint16_t type;
  struct dns_sub first; /* the MX, or the query */
  int implicit_mx;      /* no MX: the domain is its own host */
  size_t num_hosts;
  struct dns_host hosts[DNS_ROUTE_MAX_HOSTS];
  enum dns_status status; /* DNS_STEP_DONE */
  char detail[DNS_DETAIL_MAX];
};

/* A socket c-ares has open, as its sock_state callback tells. */
struct dns_sock {
  int fd;
  int want_read;
  int is_tcp;
};

struct dns {
  ares_channel channel;
  struct dns_io io;
  struct dns_sock socks[DNS_MAX_SOCKS];
  size_t num_socks;
  int freeing;
  int64_t now_ms;
  int64_t last_sweep_ms;
  size_t cache_max;
  struct dns_entry **table;
  size_t table_mask;
  size_t num_entries;
  struct dns_link lru;
  struct dns_lookup **handles;
  size_t handles_mask;
  size_t num_lookups;
  uint64_t next_handle;
  struct dns_link ready;
  struct dns_msg *scratch; /* one parsed answer at a time */
  struct dns_stats stats;
};

/* ---- c-ares library users (ares_library_init is not thread-safe) ---- */

static pthread_mutex_t dns_lib_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned dns_lib_users;

static int dns_lib_acquire(void) {
  int rc = 0;
  pthread_mutex_lock(&dns_lib_lock);
  if (dns_lib_users == 0 && ares_library_init(ARES_LIB_INIT_ALL) != 0) {
    rc = -1;
  } else {
    dns_lib_users++;
  }
  pthread_mutex_unlock(&dns_lib_lock);
  return rc;
}

static void dns_lib_release(void) {
  pthread_mutex_lock(&dns_lib_lock);
  if (--dns_lib_users == 0) {
    ares_library_cleanup();
  }
  pthread_mutex_unlock(&dns_lib_lock);
}

/* ---- small helpers ---- */

const char *dns_status_name(enum dns_status s) {
  switch (s) {
  case DNS_OK:
    return "ok";
  case DNS_NOT_FOUND:
    return "not_found";
  case DNS_NULL_MX:
    return "null_mx";
  case DNS_TEMPFAIL:
    return "tempfail";
  case DNS_PERMFAIL:
    return "permfail";
  }
  return "unknown";
}

static int64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t pow2_at_least(size_t n) {
  size_t p = 1;
  while (p < n) {
    p <<= 1;
  }
  return p;
}

static void set_err(char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

/* The reason for a failed c-ares query, as static text. */
static const char *ares_why(int status) {
  switch (status) {
  case ARES_ETIMEOUT:
    return "timeout";
  case ARES_ECONNREFUSED:
    return "no server answered (SERVFAIL, REFUSED or connection refused)";
  case ARES_ESERVFAIL:
    return "SERVFAIL";
  case ARES_EREFUSED:
    return "REFUSED";
  case ARES_ENOTIMP:
    return "NOTIMP";
  case ARES_ENOMEM:
    return "out of memory";
  case ARES_EBADRESP:
    return "malformed answer";
  default:
    return "resolver failure";
  }
}

/* ---- cache entries ---- */

static uint64_t entry_key(const char *name, uint16_t type) {
  uint8_t buf[DNS_NAME_TEXT_MAX + 2];
  size_t n = strlen(name);
  memcpy(buf, name, n);
  buf[n] = (uint8_t)(type >> 8);
  buf[n + 1] = (uint8_t)type;
  return XXH3_64bits(buf, n + 2);
}

static struct dns_entry *entry_find(struct dns *d, const char *name,
                                    uint16_t type) {
  uint64_t key = entry_key(name, type);
  for (struct dns_entry *e = d->table[key & d->table_mask]; e != NULL;
       e = e->hnext) {
    if (e->key == key && e->type == type && strcmp(e->name, name) == 0) {
      return e;
    }
  }
  return NULL;
}

static void entry_maybe_free(struct dns_entry *e) {
  if (!e->in_table && e->refs == 0) {
    free(e->rrs);
    free(e);
  }
}

static void entry_unref(struct dns_entry *e) {
  e->refs--;
  entry_maybe_free(e);
}

/* entry_unlink takes e out of the table (it lives on while held). */
static void entry_unlink(struct dns *d, struct dns_entry *e) {
  struct dns_entry **pp = &d->table[e->key & d->table_mask];
  while (*pp != e) {
    pp = &(*pp)->hnext;
  }
  *pp = e->hnext;
  e->hnext = NULL;
  link_remove(&e->lru);
  e->in_table = 0;
  d->num_entries--;
  entry_maybe_free(e);
}

static int entry_expired(const struct dns *d, const struct dns_entry *e) {
  return e->state == DNS_ENTRY_READY && e->expires_ms <= d->now_ms;
}

/* cache_make_room evicts least recently used entries until one more fits.
 * An entry in flight may go too: its waiters keep it, it is just not
 * shared with later lookups. */
static void cache_make_room(struct dns *d) {
  while (d->num_entries >= d->cache_max && !link_empty(&d->lru)) {
    struct dns_entry *old = LINK_OWNER(d->lru.prev, struct dns_entry, lru);
    if (!entry_expired(d, old)) {
      d->stats.evictions++;
    }
    entry_unlink(d, old);
  }
}

/* cache_sweep drops expired entries, at most once every DNS_SWEEP_MS. */
static void cache_sweep(struct dns *d) {
  if (d->now_ms - d->last_sweep_ms < DNS_SWEEP_MS) {
    return;
  }
  d->last_sweep_ms = d->now_ms;
  struct dns_link *l = d->lru.next;
  while (l != &d->lru) {
    struct dns_entry *e = LINK_OWNER(l, struct dns_entry, lru);
    l = l->next;
    if (entry_expired(d, e)) {
      entry_unlink(d, e);
    }
  }
}

static struct dns_entry *entry_new(struct dns *d, const char *name,
                                   uint16_t type) {
  struct dns_entry *e = calloc(1, sizeof(*e));
  if (e == NULL) {
    return NULL;
  }
  cache_make_room(d);
  e->dns = d;
  e->key = entry_key(name, type);
  e->type = type;
  e->state = DNS_ENTRY_PENDING;
  e->chain_ttl = UINT32_MAX;
  e->secure = 1;
  snprintf(e->name, sizeof e->name, "%s", name);
  snprintf(e->owner, sizeof e->owner, "%s", name);
  link_init(&e->waiters);
  e->hnext = d->table[e->key & d->table_mask];
  d->table[e->key & d->table_mask] = e;
  link_push_front(&d->lru, &e->lru);
  e->in_table = 1;
  d->num_entries++;
  return e;
}

/* rrs_copy copies n RRs and what they point to into one allocation. */
static struct dns_rr *rrs_copy(const struct dns_rr *const *src, size_t n) {
  size_t size = n * sizeof(struct dns_rr);
  for (size_t i = 0; i < n; i++) {
    const struct dns_rr *rr = src[i];
    size += strlen(rr->owner) + 1;
    if (rr->type == DNS_TYPE_CNAME) {
      size += strlen(rr->rd.cname) + 1;
    } else if (rr->type == DNS_TYPE_PTR) {
      size += strlen(rr->rd.ptr) + 1;
    } else if (rr->type == DNS_TYPE_MX) {
      size += strlen(rr->rd.mx.exchange) + 1;
    } else if (rr->type == DNS_TYPE_TXT) {
      size += rr->rd.txt.data_len;
    } else if (rr->type == DNS_TYPE_TLSA) {
      size += rr->rd.tlsa.data_len;
    }
  }
  struct dns_rr *out = malloc(size > 0 ? size : 1);
  if (out == NULL) {
    return NULL;
  }
  char *p = (char *)(out + n);
#define COPY(dst, srcp, len)                                                   \
  do {                                                                         \
    memcpy(p, (srcp), (len));                                                  \
    (dst) = (void *)p;                                                         \
    p += (len);                                                                \
  } while (0)
  for (size_t i = 0; i < n; i++) {
    const struct dns_rr *rr = src[i];
    out[i] = *rr;
    COPY(out[i].owner, rr->owner, strlen(rr->owner) + 1);
    if (rr->type == DNS_TYPE_CNAME) {
      COPY(out[i].rd.cname, rr->rd.cname, strlen(rr->rd.cname) + 1);
    } else if (rr->type == DNS_TYPE_PTR) {
      COPY(out[i].rd.ptr, rr->rd.ptr, strlen(rr->rd.ptr) + 1);
    } else if (rr->type == DNS_TYPE_MX) {
      COPY(out[i].rd.mx.exchange, rr->rd.mx.exchange,
           strlen(rr->rd.mx.exchange) + 1);
    } else if (rr->type == DNS_TYPE_TXT) {
      COPY(out[i].rd.txt.data, rr->rd.txt.data, rr->rd.txt.data_len);
    } else if (rr->type == DNS_TYPE_TLSA) {
      COPY(out[i].rd.tlsa.data, rr->rd.tlsa.data, rr->rd.tlsa.data_len);
    }
  }
#undef COPY
  return out;
}

static void lookup_ready(struct dns *d, struct dns_lookup *lk) {
  if (!lk->queued) {
    link_push_back(&d->ready, &lk->ready);
    lk->queued = 1;
  }
}

/* entry_wake tells every waiting sub that the entry is answered. */
static void entry_wake(struct dns *d, struct dns_entry *e) {
  while (!link_empty(&e->waiters)) {
    struct dns_sub *sub = LINK_OWNER(e->waiters.next, struct dns_sub, wait);
    link_remove(&sub->wait);
    sub->pending = 0;
    if (--sub->lookup->num_pending == 0) {
      lookup_ready(d, sub->lookup);
    }
  }
}

struct dns_result {
  enum dns_status status;
  const char *why;
  int nxdomain;
  uint32_t ttl; /* DNS_OK: the RRset's; DNS_NOT_FOUND: the SOA's */
  int has_ttl;  /* DNS_NOT_FOUND: there was an SOA */
  const struct dns_rrset *set; /* DNS_OK */
};

static uint32_t min_u32(uint32_t a, uint32_t b) {
  return a < b ? a : b;
}

/* cache_ttl is how long e, answered with r, stays cached; see dns.h. The
 * CNAMEs followed to get there bound it too. */
static uint32_t cache_ttl(const struct dns_entry *e,
                          const struct dns_result *r) {
  switch (e->status) {
  case DNS_OK:
    return min_u32(min_u32(r->ttl, e->chain_ttl), DNS_TTL_MAX);
  case DNS_NOT_FOUND:
    return min_u32(
        min_u32(r->has_ttl ? r->ttl : DNS_NEG_TTL_NO_SOA, e->chain_ttl),
        DNS_NEG_TTL_MAX);
  case DNS_TEMPFAIL:
    return DNS_TEMPFAIL_TTL;
  default:
    return DNS_PERMFAIL_TTL;
  }
}

/* entry_complete makes e READY with r and wakes its waiters. */
static void entry_complete(struct dns *d, struct dns_entry *e,
                           const struct dns_result *r) {
  e->status = r->status;
  e->why = r->why;
  e->nxdomain = r->nxdomain;
  if (r->status == DNS_OK) {
    e->rrs = rrs_copy(r->set->rrs, r->set->num_rrs);
    e->num_rrs = r->set->num_rrs;
    if (e->rrs == NULL) {
      e->status = DNS_TEMPFAIL;
      e->why = "out of memory";
      e->num_rrs = 0;
    }
  }
  if (e->status != DNS_OK && e->status != DNS_NOT_FOUND) {
    e->secure = 0; /* no answer to vouch for */
  }
  e->ttl = cache_ttl(e, r);
  e->expires_ms = d->now_ms + (int64_t)e->ttl * 1000;
  e->state = DNS_ENTRY_READY;
  if (e->status == DNS_TEMPFAIL) {
    d->stats.tempfails++;
  }
  entry_wake(d, e);
}

static void entry_fail(struct dns *d, struct dns_entry *e,
                       enum dns_status status, const char *why) {
  struct dns_result r = {.status = status, .why = why, .ttl = UINT32_MAX};
  entry_complete(d, e, &r);
}

static void dns_on_answer(void *arg, int status, int timeouts, uint8_t *abuf,
                          int alen);

/* entry_send sends the query for e->owner; the answer (or a failure, even
 * from inside ares_send) comes to dns_on_answer. */
static void entry_send(struct dns *d, struct dns_entry *e) {
  uint8_t q[DNS_QUERY_MAX_LEN];
  size_t len;
  /* c-ares writes its own random ID over ours. */
  if (dns_query_build(q, sizeof q, &len, 0, e->owner, e->type,
                      DNS_QUERY_FLAGS) != 0) {
    entry_fail(d, e, DNS_PERMFAIL, "name not usable in a query");
    return;
  }
  e->refs++;
  d->stats.queries++;
  ares_send(d->channel, q, (int)len, dns_on_answer, e);
}

/* answer_rcode maps a response code to a failure, or DNS_OK to go on. */
static enum dns_status answer_rcode(unsigned rcode, const char **why) {
  switch (rcode) {
  case DNS_RCODE_NOERROR:
  case DNS_RCODE_NXDOMAIN:
    return DNS_OK;
  case DNS_RCODE_FORMERR:
    *why = "FORMERR";
    return DNS_PERMFAIL;
  case DNS_RCODE_SERVFAIL:
    *why = "SERVFAIL";
    return DNS_TEMPFAIL;
  case DNS_RCODE_REFUSED:
    *why = "REFUSED";
    return DNS_TEMPFAIL;
  default:
    *why = "unexpected RCODE";
    return DNS_TEMPFAIL;
  }
}

/* entry_answer reads one response for e: completes e, or sends the next
 * query of a CNAME chain the server did not follow. */
static void entry_answer(struct dns *d, struct dns_entry *e,
                         const uint8_t *abuf, size_t alen) {
  struct dns_msg *m = d->scratch;
  struct dns_result r = {.ttl = UINT32_MAX};
  const char *why = NULL;
  if (dns_msg_parse(m, &why, abuf, alen) != 0) {
    entry_fail(d, e, DNS_TEMPFAIL, "malformed answer");
    return;
  }
  if (!m->qr || m->opcode != 0) {
    entry_fail(d, e, DNS_TEMPFAIL, "not a response");
    return;
  }
  if (m->tc) {
    entry_fail(d, e, DNS_TEMPFAIL, "truncated answer");
    return;
  }
  enum dns_status st = answer_rcode(m->rcode, &why);
  if (st != DNS_OK) {
    entry_fail(d, e, st, why);
    return;
  }
  struct dns_rrset set;
  enum dns_chain chain = dns_msg_rrset(&set, m, e->owner, e->type);
  e->secure = e->secure && m->ad;
  e->num_cnames += set.num_cnames;
  if (chain == DNS_CHAIN_LOOP || e->num_cnames > DNS_MSG_MAX_CNAME) {
    entry_fail(d, e, DNS_PERMFAIL, "CNAME loop or chain too long");
    return;
  }
  e->chain_ttl = min_u32(set.ttl, e->chain_ttl);
  if (set.num_cnames > 0) { /* else set.owner is e->owner itself */
    snprintf(e->owner, sizeof e->owner, "%s", set.owner);
  }
  if (chain == DNS_CHAIN_FOUND) {
    r.status = DNS_OK;
    r.set = &set;
    r.ttl = set.ttl;
    r.has_ttl = 1;
    entry_complete(d, e, &r);
    return;
  }
  r.has_ttl = dns_msg_negative_ttl(m, &r.ttl);
  /* An alias with nothing after it and no SOA: the server (an
   * authoritative one, or a forwarder) did not chase it; ask for the
   * target ourselves (RFC 1034 §5.3.3), within the chain limit. */
  if (m->rcode == DNS_RCODE_NOERROR && set.num_cnames > 0 && !r.has_ttl) {
    entry_send(d, e);
    return;
  }
  r.status = DNS_NOT_FOUND;
  r.nxdomain = m->rcode == DNS_RCODE_NXDOMAIN;
  r.why = r.nxdomain ? "no such domain (NXDOMAIN)" : "no records (NODATA)";
  entry_complete(d, e, &r);
}

static void dns_on_answer(void *arg, int status, int timeouts, uint8_t *abuf,
                          int alen) {
  struct dns_entry *e = arg;
  struct dns *d = e->dns;
  if (d->freeing || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
    entry_unref(e);
    return;
  }
  if (status != ARES_SUCCESS) {
    if (status == ARES_ETIMEOUT) {
      d->stats.timeouts++;
    }
    entry_fail(d, e, DNS_TEMPFAIL, ares_why(status));
  } else {
    entry_answer(d, e, abuf, alen > 0 ? (size_t)alen : 0);
  }
  entry_unref(e); /* the query's hold; a re-query took its own */
}

/* ---- subs ---- */

/* sub_start points sub at the entry for (name, type): answered from the
 * cache, joined to a query in flight, or a new query. The lookup counts
 * it as pending until answered (which may happen before this returns). */
static void sub_start(struct dns *d, struct dns_lookup *lk, struct dns_sub *sub,
                      const char *name, uint16_t type) {
  struct dns_entry *e = entry_find(d, name, type);
  int fresh = 0;
  sub->lookup = lk;
  if (e != NULL && entry_expired(d, e)) {
    entry_unlink(d, e);
    e = NULL;
  }
  if (e == NULL) {
    if ((e = entry_new(d, name, type)) == NULL) {
      sub->entry = NULL; /* read as "out of memory" */
      return;
    }
    fresh = 1;
    d->stats.cache_misses++;
  } else {
    link_remove(&e->lru);
    link_push_front(&d->lru, &e->lru);
    if (e->state == DNS_ENTRY_READY) {
      d->stats.cache_hits++;
    } else {
      d->stats.coalesced++;
    }
  }
  sub->entry = e;
  e->refs++;
  if (e->state == DNS_ENTRY_PENDING) {
    sub->pending = 1;
    link_push_back(&e->waiters, &sub->wait);
    lk->num_pending++;
  }
  if (fresh) {
    entry_send(d, e);
  }
}

static void sub_release(struct dns_sub *sub) {
  if (sub->entry == NULL) {
    return;
  }
  if (sub->pending) {
    link_remove(&sub->wait);
    sub->pending = 0;
  }
  entry_unref(sub->entry);
  sub->entry = NULL;
}

/* sub_status: the answer's status, or TEMPFAIL if none could be had. */
static enum dns_status sub_status(const struct dns_sub *sub, const char **why) {
  if (sub->entry == NULL) {
    *why = "out of memory";
    return DNS_TEMPFAIL;
  }
  *why = sub->entry->why;
  return sub->entry->status;
}

/* ---- lookups and handles ---- */

static int handles_grow(struct dns *d) {
  size_t n = (d->handles_mask + 1) * 2;
  struct dns_lookup **t = calloc(n, sizeof(*t));
  if (t == NULL) {
    return -1;
  }
  for (size_t i = 0; i <= d->handles_mask; i++) {
    struct dns_lookup *lk = d->handles[i];
    while (lk != NULL) {
      struct dns_lookup *next = lk->hnext;
      lk->hnext = t[lk->handle & (n - 1)];
      t[lk->handle & (n - 1)] = lk;
      lk = next;
    }
  }
  free(d->handles);
  d->handles = t;
  d->handles_mask = n - 1;
  return 0;
}

static struct dns_lookup *lookup_new(struct dns *d, enum dns_lookup_kind kind,
                                     void *arg) {
  if (d->num_lookups >= 2 * (d->handles_mask + 1) && handles_grow(d) != 0) {
    return NULL;
  }
  struct dns_lookup *lk = calloc(1, sizeof(*lk));
  if (lk == NULL) {
    return NULL;
  }
  lk->handle = ++d->next_handle;
  lk->kind = kind;
  lk->arg = arg;
  link_init(&lk->ready);
  lk->hnext = d->handles[lk->handle & d->handles_mask];
  d->handles[lk->handle & d->handles_mask] = lk;
  d->num_lookups++;
  return lk;
}

/* lookup_forget takes lk out of the handle table: a dns_cancel of it from
 * its own callback is then a no-op. */
static void lookup_forget(struct dns *d, struct dns_lookup *lk) {
  struct dns_lookup **pp = &d->handles[lk->handle & d->handles_mask];
  while (*pp != NULL && *pp != lk) {
    pp = &(*pp)->hnext;
  }
  if (*pp == lk) {
    *pp = lk->hnext;
    d->num_lookups--;
  }
  lk->hnext = NULL;
}

static void lookup_free(struct dns *d, struct dns_lookup *lk) {
  lookup_forget(d, lk);
  if (lk->queued) {
    link_remove(&lk->ready);
    lk->queued = 0;
  }
  sub_release(&lk->first);
  for (size_t i = 0; i < lk->num_hosts; i++) {
    sub_release(&lk->hosts[i].addr[0]);
    sub_release(&lk->hosts[i].addr[1]);
  }
  free(lk);
}

/* detail_fmt writes a detail line; names may make it longer than
 * DNS_DETAIL_MAX, and then it is cut. */
__attribute__((format(printf, 2, 3))) static void
detail_fmt(char detail[DNS_DETAIL_MAX], const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, DNS_DETAIL_MAX, fmt, ap);
  va_end(ap);
}

__attribute__((format(printf, 3, 4))) static void
lookup_done(struct dns_lookup *lk, enum dns_status status, const char *fmt,
            ...) {
  va_list ap;
  lk->step = DNS_STEP_DONE;
  lk->status = status;
  va_start(ap, fmt);
  vsnprintf(lk->detail, DNS_DETAIL_MAX, fmt, ap);
  va_end(ap);
}

/* ---- routes ---- */

/* literal_parse reads "192.0.2.1", "2001:db8::1" or "IPv6:2001:db8::1"
 * (RFC 5321 §4.1.3, brackets already gone) into a port-0 address. */
static int literal_parse(const char *s, struct sockaddr_storage *out) {
  memset(out, 0, sizeof(*out));
  struct sockaddr_in *sin = (struct sockaddr_in *)out;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    return 0;
  }
  if (strncasecmp(s, "IPv6:", 5) == 0) {
    s += 5;
  }
  if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    return 0;
  }
  return -1;
}

/* unbracket copies "[x]" as "x" (or s as it is); *out_bracketed says
 * which. Returns -1 if it does not fit or the brackets do not pair. */
static int unbracket(const char *s, char out[DNS_NAME_TEXT_MAX],
                     int *out_bracketed) {
  size_t n = strlen(s);
  *out_bracketed = n > 0 && s[0] == '[';
  if (*out_bracketed) {
    if (n < 3 || s[n - 1] != ']') {
      return -1;
    }
    s++;
    n -= 2;
  }
  if (n >= DNS_NAME_TEXT_MAX) {
    return -1;
  }
  memcpy(out, s, n);
  out[n] = '\0';
  return 0;
}

/* host_start adds a host to look up (AAAA and A), or a host decided
 * without lookup when its name is not a host name. */
static void host_start(struct dns *d, struct dns_lookup *lk, const char *name,
                       uint16_t pref) {
  struct dns_host *h = &lk->hosts[lk->num_hosts++];
  h->pref = pref;
  if (dns_name_canon(h->name, name) != 0 || !netaddr_hostname_valid(h->name)) {
    snprintf(h->name, sizeof h->name, "%s", name);
    h->status = DNS_PERMFAIL;
    h->why = "not a host name";
    return;
  }
  h->status = DNS_OK;
  sub_start(d, lk, &h->addr[0], h->name, DNS_TYPE_AAAA);
  sub_start(d, lk, &h->addr[1], h->name, DNS_TYPE_A);
}

static void host_literal(struct dns_lookup *lk, const char *text,
                         const struct sockaddr_storage *ss) {
  struct dns_host *h = &lk->hosts[lk->num_hosts++];
  snprintf(h->name, sizeof h->name, "%s", text);
  h->literal = *ss;
  h->is_literal = 1;
  h->status = DNS_OK;
  lk->step = DNS_STEP_ADDRS;
}

struct mx_pick {
  uint16_t pref;
  const char *exchange;
};

/* mx_order sorts by preference and shuffles within one preference (RFC
 * 5321 §5.1), then drops repeated hosts (keeping the better preference). */
static size_t mx_order(struct mx_pick *mx, size_t n) {
  for (size_t i = 1; i < n; i++) { /* insertion sort: n <= 64 */
    struct mx_pick v = mx[i];
    size_t j = i;
    for (; j > 0 && mx[j - 1].pref > v.pref; j--) {
      mx[j] = mx[j - 1];
    }
    mx[j] = v;
  }
  for (size_t start = 0; start < n;) {
    size_t end = start + 1;
    while (end < n && mx[end].pref == mx[start].pref) {
      end++;
    }
    for (size_t i = end - 1; i > start; i--) { /* Fisher-Yates */
      size_t j = start + arc4random_uniform((uint32_t)(i - start + 1));
      struct mx_pick t = mx[i];
      mx[i] = mx[j];
      mx[j] = t;
    }
    start = end;
  }
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    int seen = 0;
    for (size_t k = 0; k < kept && !seen; k++) {
      seen = dns_name_equal(mx[k].exchange, mx[i].exchange);
    }
    if (!seen) {
      mx[kept++] = mx[i];
    }
  }
  return kept;
}

/* mx_hosts turns an MX RRset into hosts to look up. */
static void mx_hosts(struct dns *d, struct dns_lookup *lk,
                     const struct dns_entry *e) {
  struct mx_pick mx[DNS_MSG_MAX_ANSWER];
  size_t n = 0, nulls = 0;
  for (size_t i = 0; i < e->num_rrs; i++) {
    if (e->rrs[i].type != DNS_TYPE_MX) {
      continue;
    }
    if (strcmp(e->rrs[i].rd.mx.exchange, ".") == 0) {
      nulls++; /* RFC 7505 §3: "." is no host */
      continue;
    }
    mx[n].pref = e->rrs[i].rd.mx.pref;
    mx[n++].exchange = e->rrs[i].rd.mx.exchange;
  }
  if (n == 0) {
    lookup_done(lk, nulls > 0 ? DNS_NULL_MX : DNS_NOT_FOUND,
                nulls > 0 ? "%s does not accept mail (null MX, RFC 7505)"
                          : "no usable MX host for %s",
                lk->name);
    return;
  }
  n = mx_order(mx, n);
  lk->step = DNS_STEP_ADDRS;
  for (size_t i = 0; i < n && i < DNS_ROUTE_MAX_HOSTS; i++) {
    host_start(d, lk, mx[i].exchange, mx[i].pref);
  }
}

/* mx_step reads the MX answer: a final verdict, or hosts to look up. */
static void mx_step(struct dns *d, struct dns_lookup *lk) {
  const char *why;
  enum dns_status st = sub_status(&lk->first, &why);
  const struct dns_entry *e = lk->first.entry;
  switch (st) {
  case DNS_OK:
    mx_hosts(d, lk, e);
    return;
  case DNS_NOT_FOUND:
    if (e->nxdomain) {
      lookup_done(lk, DNS_NOT_FOUND, "%s: no such domain (NXDOMAIN)", lk->name);
      return;
    }
    /* RFC 5321 §5.1: no MX, so the domain is its own (implicit) MX. */
    lk->step = DNS_STEP_ADDRS;
    lk->implicit_mx = 1;
    host_start(d, lk, lk->name, 0);
    return;
  default:
    lookup_done(lk, st, "MX lookup for %s: %s", lk->name, why);
    return;
  }
}

/* host_addrs copies up to max addresses of one family from an answer. */
static size_t host_addrs(const struct dns_entry *e,
                         struct sockaddr_storage *out, size_t max) {
  size_t n = 0;
  for (size_t i = 0; i < e->num_rrs && n < max; i++) {
    const struct dns_rr *rr = &e->rrs[i];
    memset(&out[n], 0, sizeof(out[n]));
    if (rr->type == DNS_TYPE_AAAA) {
      struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[n++];
      sin6->sin6_family = AF_INET6;
      memcpy(&sin6->sin6_addr, rr->rd.aaaa, 16);
    } else if (rr->type == DNS_TYPE_A) {
      struct sockaddr_in *sin = (struct sockaddr_in *)&out[n++];
      sin->sin_family = AF_INET;
      memcpy(&sin->sin_addr, rr->rd.a, 4);
    }
  }
  return n;
}

/* Route assembly state: the notes go into detail, the verdict from the
 * targets. */
struct route_build {
  struct dns_route route;
  int any_answer;
  int any_temp;
  const char *first_why; /* of the first failed target */
  const char *first_why_host;
  const char *alias_host; /* the first target reached through a CNAME */
  const char *alias_owner;
};

/* target_fill fills one target from its host's answers. */
static void target_fill(struct route_build *b, const struct dns_host *h,
                        struct dns_target *t, struct sockaddr_storage *addrs) {
  snprintf(t->host, sizeof t->host, "%s", h->name);
  t->pref = h->pref;
  t->addrs = addrs;
  t->status = h->status;
  const char *why = h->why;
  if (h->is_literal) {
    addrs[0] = h->literal;
    t->num_addrs = 1;
  } else if (h->status == DNS_OK) {
    enum dns_status st[2];
    const char *w[2];
    int host_secure = 1;
    for (int k = 0; k < 2; k++) {
      const struct dns_sub *s = &h->addr[k];
      st[k] = sub_status(s, &w[k]);
      if (st[k] == DNS_OK) {
        t->num_addrs +=
            host_addrs(s->entry, addrs + t->num_addrs, DNS_ROUTE_MAX_ADDRS / 2);
      }
      if (st[k] == DNS_OK || st[k] == DNS_NOT_FOUND) {
        b->any_answer = 1;
        b->route.secure = b->route.secure && s->entry->secure;
        host_secure = host_secure && s->entry->secure;
        if (s->entry->num_cnames > 0 && b->alias_host == NULL) {
          b->alias_host = h->name;
          b->alias_owner = s->entry->owner;
        }
      }
    }
    /* Addresses win; else a temporary failure of either; else any
     * permanent failure; else neither name exists. */
    int k = st[0] == DNS_TEMPFAIL   ? 0
            : st[1] == DNS_TEMPFAIL ? 1
            : st[0] == DNS_PERMFAIL ? 0
                                    : 1;
    t->status = t->num_addrs > 0 ? DNS_OK : st[k];
    why = w[k];
    /* RFC 7672 §2.2.1: a failed family gave no address to trust or
     * distrust; the answers used must all be validated. */
    t->secure = t->num_addrs > 0 && host_secure;
  }
  if (t->status == DNS_TEMPFAIL) {
    b->any_temp = 1;
  }
  if (t->status != DNS_OK && b->first_why == NULL) {
    b->first_why = why != NULL ? why : "no address";
    b->first_why_host = h->name;
  }
}

/* route_verdict sets the route's status and detail from its targets. */
static void route_verdict(struct route_build *b, const struct dns_lookup *lk) {
  struct dns_route *r = &b->route;
  int ok = 0;
  for (size_t i = 0; i < r->num_targets; i++) {
    ok = ok || r->targets[i].status == DNS_OK;
  }
  if (ok) {
    r->status = DNS_OK;
    if (b->alias_host != NULL) {
      detail_fmt(r->detail, "%s is an alias (CNAME) of %s; followed",
                 b->alias_host, b->alias_owner);
    }
  } else if (lk->implicit_mx && !b->any_temp) {
    r->status = DNS_NOT_FOUND;
    detail_fmt(r->detail, "no MX/A/AAAA for %s", lk->name);
  } else if (lk->kind == DNS_LOOKUP_MX && !lk->implicit_mx) {
    r->status = b->any_temp ? DNS_TEMPFAIL : DNS_NOT_FOUND;
    detail_fmt(r->detail, "no address for any MX host of %s (%s: %s)", lk->name,
               b->first_why_host, b->first_why);
  } else {
    r->status = b->any_temp ? DNS_TEMPFAIL : DNS_NOT_FOUND;
    detail_fmt(r->detail, "no address for %s: %s", b->first_why_host,
               b->first_why);
  }
  if (!b->any_answer) {
    r->secure = 0;
  }
}

/* mx_secure: did the MX step get an answer with AD (the RRset, or the
 * NODATA of an implicit MX)? RFC 7672 §2.2.1. */
static int mx_secure(const struct dns_lookup *lk) {
  const struct dns_entry *e = lk->first.entry;
  if (lk->kind != DNS_LOOKUP_MX || e == NULL) {
    return 0;
  }
  return (e->status == DNS_OK || e->status == DNS_NOT_FOUND) && e->secure;
}

/* route_finish builds the route, runs the callback and frees lk. */
static void route_finish(struct dns *d, struct dns_lookup *lk) {
  struct route_build b = {.route = {.secure = 1, .mx_secure = mx_secure(lk)}};
  struct dns_target *targets = NULL;
  struct sockaddr_storage *addrs = NULL;
  if (lk->step == DNS_STEP_DONE) {
    b.route.status = lk->status;
    b.route.secure = 0;
    memcpy(b.route.detail, lk->detail, sizeof lk->detail);
    if (lk->first.entry != NULL && lk->status != DNS_TEMPFAIL &&
        lk->status != DNS_PERMFAIL) {
      b.route.secure = lk->first.entry->secure;
    }
  } else {
    targets = calloc(lk->num_hosts, sizeof(*targets));
    addrs = calloc(lk->num_hosts * DNS_ROUTE_MAX_ADDRS, sizeof(*addrs));
    if (targets == NULL || addrs == NULL) {
      b.route.status = DNS_TEMPFAIL;
      detail_fmt(b.route.detail, "out of memory");
    } else {
      b.route.targets = targets;
      b.route.num_targets = lk->num_hosts;
      if (lk->first.entry != NULL) {
        b.route.secure = lk->first.entry->secure;
        b.any_answer = 1;
      }
      for (size_t i = 0; i < lk->num_hosts; i++) {
        target_fill(&b, &lk->hosts[i], &targets[i],
                    addrs + i * DNS_ROUTE_MAX_ADDRS);
      }
      route_verdict(&b, lk);
    }
  }
  lookup_forget(d, lk);
  lk->route_cb(lk->arg, &b.route);
  free(targets);
  free(addrs);
  lookup_free(d, lk);
}

static void query_finish(struct dns *d, struct dns_lookup *lk) {
  struct dns_answer a = {.type = lk->type, .owner = lk->name};
  const struct dns_entry *e = lk->first.entry;
  if (lk->step == DNS_STEP_DONE) {
    a.status = lk->status;
    a.why = lk->detail;
  } else {
    a.status = sub_status(&lk->first, &a.why);
  }
  if (e != NULL && lk->step != DNS_STEP_DONE) {
    int64_t left = (e->expires_ms - d->now_ms + 999) / 1000;
    a.secure = e->secure;
    a.ttl = left > 0 ? (uint32_t)left : 0;
    a.num_rrs = e->num_rrs;
    a.rrs = e->rrs;
    a.nxdomain = e->nxdomain;
    a.owner = e->owner;
    a.num_cnames = e->num_cnames;
  }
  lookup_forget(d, lk);
  lk->answer_cb(lk->arg, &a);
  lookup_free(d, lk);
}

/* lookup_step moves lk on once none of its subs is pending. */
static void lookup_step(struct dns *d, struct dns_lookup *lk) {
  if (lk->num_pending > 0) {
    return;
  }
  if (lk->kind == DNS_LOOKUP_QUERY) {
    query_finish(d, lk);
    return;
  }
  if (lk->step == DNS_STEP_FIRST) {
    mx_step(d, lk);
    if (lk->num_pending > 0) {
      return;
    }
  }
  route_finish(d, lk);
}

void dns_dispatch(struct dns *d) {
  while (!link_empty(&d->ready)) {
    struct dns_lookup *lk = LINK_OWNER(d->ready.next, struct dns_lookup, ready);
    link_remove(&lk->ready);
    lk->queued = 0;
    lookup_step(d, lk);
  }
}

/* ---- public lookups ---- */

uint64_t dns_route_mx(struct dns *d, const char *domain, dns_route_cb cb,
                      void *arg) {
  char text[DNS_NAME_TEXT_MAX];
  struct sockaddr_storage ss;
  int bracketed;
  int bad = unbracket(domain, text, &bracketed) != 0;
  if (!bad && bracketed && literal_parse(text, &ss) != 0) {
    return dns_route_host(d, domain, cb, arg); /* "[name]": no MX */
  }
  struct dns_lookup *lk = lookup_new(d, DNS_LOOKUP_MX, arg);
  if (lk == NULL) {
    return 0;
  }
  lk->route_cb = cb;
  if (bad) {
    lookup_done(lk, DNS_PERMFAIL, "invalid domain");
  } else if (bracketed) {
    host_literal(lk, text, &ss);
  } else if (dns_name_canon(lk->name, text) != 0 ||
             !netaddr_hostname_valid(lk->name)) {
    lookup_done(lk, DNS_PERMFAIL, "invalid domain name \"%.200s\"", domain);
  } else {
    sub_start(d, lk, &lk->first, lk->name, DNS_TYPE_MX);
  }
  if (lk->num_pending == 0) {
    lookup_ready(d, lk);
  }
  return lk->handle;
}

uint64_t dns_route_host(struct dns *d, const char *host, dns_route_cb cb,
                        void *arg) {
  char text[DNS_NAME_TEXT_MAX];
  struct sockaddr_storage ss;
  int bracketed;
  struct dns_lookup *lk = lookup_new(d, DNS_LOOKUP_HOST, arg);
  if (lk == NULL) {
    return 0;
  }
  lk->route_cb = cb;
  if (unbracket(host, text, &bracketed) != 0) {
    lookup_done(lk, DNS_PERMFAIL, "invalid host");
  } else if (literal_parse(text, &ss) == 0) {
    host_literal(lk, text, &ss);
  } else if (dns_name_canon(lk->name, text) != 0 ||
             !netaddr_hostname_valid(lk->name)) {
    lookup_done(lk, DNS_PERMFAIL, "invalid host name \"%.200s\"", host);
  } else {
    lk->step = DNS_STEP_ADDRS;
    host_start(d, lk, lk->name, 0);
  }
  if (lk->num_pending == 0) {
    lookup_ready(d, lk);
  }
  return lk->handle;
}

uint64_t dns_query(struct dns *d, const char *name, uint16_t type,
                   dns_answer_cb cb, void *arg) {
  struct dns_lookup *lk = lookup_new(d, DNS_LOOKUP_QUERY, arg);
  if (lk == NULL) {
    return 0;
  }
  lk->answer_cb = cb;
  lk->type = type;
  if (type == DNS_TYPE_OPT || dns_name_canon(lk->name, name) != 0) {
    snprintf(lk->name, sizeof lk->name, "%.200s", name);
    lookup_done(lk, DNS_PERMFAIL, "invalid name or type");
  } else {
    sub_start(d, lk, &lk->first, lk->name, type);
  }
  if (lk->num_pending == 0) {
    lookup_ready(d, lk);
  }
  return lk->handle;
}

/* ---- DANE (RFC 7672) ---- */

int dns_tlsa_usable(const struct dns_rr *rr) {
  if (rr->type != DNS_TYPE_TLSA) {
    return 0;
  }
  if ((rr->rd.tlsa.usage != 2 && rr->rd.tlsa.usage != 3) ||
      rr->rd.tlsa.selector > 1) {
    return 0; /* §3.1.3: PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP */
  }
  switch (rr->rd.tlsa.mtype) {
  case 0:
    return rr->rd.tlsa.data_len > 0;
  case 1:
    return rr->rd.tlsa.data_len == 32; /* SHA2-256 */
  case 2:
    return rr->rd.tlsa.data_len == 64; /* SHA2-512 */
  default:
    return 0;
  }
}

enum dns_dane dns_dane_verdict(const struct dns_answer *a,
                               size_t *out_num_usable) {
  *out_num_usable = 0;
  if (a->status != DNS_OK && a->status != DNS_NOT_FOUND) {
    return DNS_DANE_FAILED; /* §2.2: no plaintext on a failed lookup */
  }
  if (!a->secure) {
    return DNS_DANE_INSECURE;
  }
  if (a->status == DNS_NOT_FOUND) {
    return DNS_DANE_NONE;
  }
  size_t n = 0;
  for (size_t i = 0; i < a->num_rrs; i++) {
    n += (size_t)dns_tlsa_usable(&a->rrs[i]);
  }
  *out_num_usable = n;
  return n > 0 ? DNS_DANE_USABLE : DNS_DANE_UNUSABLE;
}

const char *dns_dane_name(enum dns_dane v) {
  switch (v) {
  case DNS_DANE_USABLE:
    return "usable";
  case DNS_DANE_UNUSABLE:
    return "unusable";
  case DNS_DANE_NONE:
    return "none";
  case DNS_DANE_INSECURE:
    return "insecure";
  case DNS_DANE_FAILED:
    return "failed";
  }
  return "?";
}

void dns_cancel(struct dns *d, uint64_t handle) {
  struct dns_lookup *lk = d->handles[handle & d->handles_mask];
  while (lk != NULL && lk->handle != handle) {
    lk = lk->hnext;
  }
  if (lk != NULL) {
    lookup_free(d, lk);
  }
}

/* ---- the channel ---- */

static struct dns_sock *sock_find(struct dns *d, int fd) {
  for (size_t i = 0; i < d->num_socks; i++) {
    if (d->socks[i].fd == fd) {
      return &d->socks[i];
    }
  }
  return NULL;
}

/* sock_note keeps d->socks as c-ares opens, changes and closes sockets. */
static void sock_note(struct dns *d, int fd, int readable, int writable) {
  struct dns_sock *s = sock_find(d, fd);
  if (!readable && !writable) {
    if (s != NULL) {
      *s = d->socks[--d->num_socks];
    }
    return;
  }
  if (s == NULL) {
    if (d->num_socks == DNS_MAX_SOCKS) {
      return; /* cannot happen: see DNS_MAX_SOCKS; only no draining */
    }
    s = &d->socks[d->num_socks++];
    int type = 0;
    socklen_t len = sizeof type;
    s->fd = fd;
    s->is_tcp = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 &&
                type == SOCK_STREAM;
  }
  s->want_read = readable;
}

static void dns_on_sock_state(void *data, ares_socket_t fd, int readable,
                              int writable) {
  struct dns *d = data;
  sock_note(d, fd, readable, writable);
  if (d->io.watch != NULL) {
    d->io.watch(d->io.ctx, fd, readable, writable);
  }
}

/* servers_csv joins the configured servers for ares_set_servers_ports_csv,
 * checking each is an address with an optional port. */
static int servers_csv(const struct dns_config *cfg, char *out, size_t out_len,
                       char *err, size_t err_len) {
  size_t n = 0;
  out[0] = '\0';
  if (cfg->num_servers > DNS_MAX_SERVERS) {
    set_err(err, err_len, "more than %d DNS servers", DNS_MAX_SERVERS);
    return -1;
  }
  for (size_t i = 0; i < cfg->num_servers; i++) {
    const char *s = cfg->servers[i];
    char host[DNS_NAME_TEXT_MAX];
    uint16_t port;
    struct sockaddr_storage ss;
    int ok = literal_parse(s, &ss) == 0 ||
             (hostport_parse(s, host, sizeof host, &port) == 0 &&
              literal_parse(host, &ss) == 0);
    int len = snprintf(out + n, out_len - n, "%s%s", n ? "," : "", s);
    if (!ok || len < 0 || (size_t)len >= out_len - n) {
      set_err(err, err_len,
              "DNS server \"%s\" is not IP, IP:PORT or [IPv6]:PORT", s);
      return -1;
    }
    n += (size_t)len;
  }
  return 0;
}

static int dns_channel_init(struct dns *d, const struct dns_config *cfg,
                            char *err, size_t err_len) {
  char csv[DNS_MAX_SERVERS * 64];
  struct ares_options o;
  if (servers_csv(cfg, csv, sizeof csv, err, err_len) != 0) {
    return -1;
  }
  memset(&o, 0, sizeof o);
  o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES | ARES_FLAG_EDNS;
  o.timeout = (int)(cfg->timeout_ms ? cfg->timeout_ms : DNS_DEFAULT_TIMEOUT_MS);
  o.tries = (int)(cfg->tries ? cfg->tries : DNS_DEFAULT_TRIES);
  o.ednspsz = DNS_EDNS_UDP_SIZE;
  o.sock_state_cb = dns_on_sock_state;
  o.sock_state_cb_data = d;
  int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
             ARES_OPT_EDNSPSZ | ARES_OPT_SOCK_STATE_CB;
  int rc = ares_init_options(&d->channel, &o, mask);
  if (rc != ARES_SUCCESS) {
    set_err(err, err_len, "c-ares: %s", ares_strerror(rc));
    return -1;
  }
  if (cfg->num_servers > 0 &&
      (rc = ares_set_servers_ports_csv(d->channel, csv)) != ARES_SUCCESS) {
    set_err(err, err_len, "c-ares servers \"%s\": %s", csv, ares_strerror(rc));
    ares_destroy(d->channel);
    return -1;
  }
  return 0;
}

struct dns *dns_new(const struct dns_config *cfg, const struct dns_io *io,
                    char *err, size_t err_len) {
  if (dns_lib_acquire() != 0) {
    set_err(err, err_len, "c-ares library init failed");
    return NULL;
  }
  struct dns *d = calloc(1, sizeof(*d));
  size_t max = cfg->cache_max ? cfg->cache_max : DNS_DEFAULT_CACHE_MAX;
  if (d != NULL) {
    d->cache_max = max < DNS_MAX_CACHE_MAX ? max : DNS_MAX_CACHE_MAX;
    d->table_mask = pow2_at_least(d->cache_max) - 1;
    d->handles_mask = DNS_MIN_HANDLE_BUCKETS - 1;
    d->table = calloc(d->table_mask + 1, sizeof(*d->table));
    d->handles = calloc(d->handles_mask + 1, sizeof(*d->handles));
    d->scratch = malloc(sizeof(*d->scratch));
  }
  if (d == NULL || d->table == NULL || d->handles == NULL ||
      d->scratch == NULL) {
    set_err(err, err_len, "out of memory");
  } else if (dns_channel_init(d, cfg, err, err_len) == 0) {
    d->io = *io;
    link_init(&d->lru);
    link_init(&d->ready);
    d->now_ms = d->last_sweep_ms = monotonic_ms();
    return d;
  }
  if (d != NULL) {
    free(d->table);
    free(d->handles);
    free(d->scratch);
    free(d);
  }
  dns_lib_release();
  return NULL;
}

void dns_free(struct dns *d) {
  if (d == NULL) {
    return;
  }
  d->freeing = 1;
  /* Calls dns_on_answer with ARES_EDESTRUCTION for each query in flight
   * (which drops its hold) and watch(fd, 0, 0) for each open socket. */
  ares_destroy(d->channel);
  for (size_t i = 0; i <= d->handles_mask; i++) {
    while (d->handles[i] != NULL) {
      lookup_free(d, d->handles[i]);
    }
  }
  while (!link_empty(&d->lru)) {
    entry_unlink(d, LINK_OWNER(d->lru.next, struct dns_entry, lru));
  }
  free(d->table);
  free(d->handles);
  free(d->scratch);
  free(d);
  dns_lib_release();
}

/* has_input: 1 if fd has something to read (or an error to find) now. */
static int has_input(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, 0) == 1 && p.revents != 0;
}

void dns_process_fd(struct dns *d, int fd, int readable, int writable) {
  ares_process_fd(d->channel, readable ? fd : ARES_SOCKET_BAD,
                  writable ? fd : ARES_SOCKET_BAD);
  /* c-ares reads a TCP answer's length and its body in two calls, one
   * read each: a host told of readiness only when more data arrives
   * (epoll EPOLLET, io_uring multishot poll) would never report the body
   * already queued. So drain a TCP socket while it has input. UDP needs
   * nothing: c-ares reads those until EAGAIN. */
  for (int i = 0; readable && i < DNS_TCP_DRAIN_MAX; i++) {
    const struct dns_sock *s = sock_find(d, fd);
    if (s == NULL || !s->is_tcp || !s->want_read || !has_input(fd)) {
      break;
    }
    ares_process_fd(d->channel, fd, ARES_SOCKET_BAD);
  }
}

void dns_tick(struct dns *d, int64_t now_ms) {
  if (now_ms > d->now_ms) {
    d->now_ms = now_ms;
  }
  ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  cache_sweep(d);
  dns_dispatch(d);
}

int64_t dns_next_timeout_ms(struct dns *d, int64_t now_ms) {
  struct timeval tv;
  if (!link_empty(&d->ready)) {
    return 0;
  }
  if (ares_timeout(d->channel, NULL, &tv) == NULL) {
    return -1;
  }
  return (int64_t)tv.tv_sec * 1000 + (tv.tv_usec + 999) / 1000;
}

void dns_get_stats(const struct dns *d, struct dns_stats *out) {
  *out = d->stats;
}
