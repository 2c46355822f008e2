/* policy/dns.h — the resolver: MX routing for delivery (RFC 5321 §5.1) and
 * typed lookups for SPF, DKIM, DMARC, DANE and MTA-STS, through a bounded
 * cache.
 *
 * Owns: one c-ares channel, the cache, and the lookups in flight. Queries
 * are built by proto/dns_msg (RD, AD per RFC 6840 §5.7, EDNS(0) with a
 * UDP size of 1232) and sent with ares_send; answers are parsed by
 * proto/dns_msg, so TTLs and the AD bit are ours. Names are absolute: no
 * search list, no ndots, no /etc/hosts.
 *
 * Thread: one struct dns per thread, used by that thread only; no locks
 * (only dns_new and dns_free take a process-wide mutex, to count c-ares
 * library users).
 *
 * No loop inside. The host:
 *   - watches the sockets it is told about: io.watch(ctx, fd, r, w) says
 *     which readiness to wait for; r = w = 0 means stop watching fd, and
 *     comes before c-ares closes it (the same fd number may be announced
 *     again right after, for a new socket, even within one call: a host
 *     with polls in flight must tell an old socket's completion from the
 *     new one's). Level- or edge-triggered readiness both work. watch
 *     is called from inside dns_route_*, dns_query, dns_process_fd,
 *     dns_tick, dns_dispatch and dns_free; never from dns_new,
 *     dns_cancel or dns_get_stats;
 *   - calls dns_process_fd(fd, r, w) when a watched fd is ready (it may
 *     call watch, never a lookup callback);
 *   - calls dns_tick(now) at least once a second and after each round of
 *     dns_process_fd: it runs c-ares timeouts and retries, ages the cache
 *     and runs finished lookups' callbacks;
 *   - calls dns_dispatch after starting lookups, before it sleeps: lookups
 *     answered from the cache, or failed at once, wait there.
 *     dns_next_timeout_ms returns 0 while a callback waits.
 * Lookup callbacks run only inside dns_tick and dns_dispatch, never inside
 * dns_route_*, dns_query or dns_process_fd. A callback may start lookups
 * and cancel others (one answered from the cache runs in the same
 * dns_dispatch call); it must not call dns_free.
 *
 * Time: the cache runs on the now_ms the host passes to dns_tick, which
 * must be CLOCK_MONOTONIC in milliseconds (dns_new reads that clock once
 * to start; a smaller now_ms is ignored). With a wall clock instead, a
 * step back would stop the cache from ageing for that long and a step
 * forward would empty it. c-ares reads CLOCK_MONOTONIC itself for its
 * retry timers.
 *
 * Pointers: a struct dns_route or dns_answer, and everything it points
 * to, is valid only during the callback; copy what must outlive it.
 * Handles are never reused; cancelling a finished lookup is a no-op.
 *
 * Cache (one per struct dns, at most cache_max entries keyed by XXH3 of
 * the lower-case name and type; least recently used evicted first, and
 * expired entries swept once a second):
 *   - answers: min TTL over the RRset and the CNAMEs followed, capped at
 *     DNS_TTL_MAX; TTL 0 is not cached (lookups in flight still share);
 *   - NXDOMAIN and NODATA: min(SOA TTL, SOA MINIMUM) (RFC 2308 §5), capped
 *     at DNS_NEG_TTL_MAX; without an SOA, DNS_NEG_TTL_NO_SOA (RFC 2308
 *     says not to cache those at all; a minute keeps a burst of mail to
 *     one domain from asking again for each message);
 *   - TEMPFAIL: DNS_TEMPFAIL_TTL seconds, so a dead server is not asked
 *     again by every message; PERMFAIL: DNS_PERMFAIL_TTL.
 * Identical lookups in flight share one query.
 *
 * Limits: DNS_ROUTE_MAX_HOSTS MX hosts looked up (the most preferred),
 * DNS_ROUTE_MAX_ADDRS addresses per host (half IPv6, half IPv4), a CNAME
 * chain of DNS_MSG_MAX_CNAME links (also across re-queries when a server
 * does not chase the alias itself), DNS_MSG_MAX_ANSWER RRs per answer.
 * A query ends after at most tries rounds over the servers; c-ares
 * doubles the per-try timeout each round, so one server and tries = 2
 * give up after 3 * timeout_ms. A route lookup is an MX query followed by
 * AAAA and A queries in parallel: at most twice that, plus one query per
 * CNAME a server did not chase.
 *
 * c-ares 1.18.1 quirks: SERVFAIL and REFUSED are retried on the next
 * server and end as "no server answered" (ECONNREFUSED); a FORMERR answer
 * without OPT makes c-ares retry that query without EDNS and turn EDNS off
 * for the whole channel (answers over 512 octets then go over TCP). */
#ifndef POSTSEAL_POLICY_DNS_H
#define POSTSEAL_POLICY_DNS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proto/dns_msg.h"

#define DNS_DEFAULT_TIMEOUT_MS 2000
#define DNS_DEFAULT_TRIES 2
#define DNS_DEFAULT_CACHE_MAX 4096
#define DNS_MAX_CACHE_MAX (1u << 20)
#define DNS_MAX_SERVERS 8
#define DNS_TTL_MAX 86400     /* a day */
#define DNS_NEG_TTL_MAX 10800 /* RFC 2308 §5: "one to three hours" */
#define DNS_NEG_TTL_NO_SOA 60
#define DNS_TEMPFAIL_TTL 5
#define DNS_PERMFAIL_TTL 60
#define DNS_ROUTE_MAX_HOSTS 10
#define DNS_ROUTE_MAX_ADDRS 16
#define DNS_DETAIL_MAX 256

struct dns;

struct dns_io {
  void *ctx;
  /* From ARES_OPT_SOCK_STATE_CB: want_read = want_write = 0 means stop
   * watching fd (it is about to be closed). */
  void (*watch)(void *ctx, int fd, int want_read, int want_write);
};

struct dns_config {
  /* "127.0.0.1:5353", "[::1]:53", "192.0.2.53" (port 53); at most
   * DNS_MAX_SERVERS. num_servers 0: the nameservers of /etc/resolv.conf
   * (127.0.0.1 if it names none). */
  const char *const *servers;
  size_t num_servers;
  unsigned timeout_ms; /* first try; 0: DNS_DEFAULT_TIMEOUT_MS */
  unsigned tries;      /* rounds over the servers; 0: DNS_DEFAULT_TRIES */
  size_t cache_max;    /* 0: DNS_DEFAULT_CACHE_MAX; capped */
};

enum dns_status {
  DNS_OK,
  DNS_NOT_FOUND, /* NXDOMAIN or NODATA: permanent */
  DNS_NULL_MX,   /* RFC 7505: the domain accepts no mail */
  DNS_TEMPFAIL,  /* SERVFAIL, REFUSED, timeout, truncated without TCP,
                    malformed answer, network, memory */
  DNS_PERMFAIL,  /* malformed name, FORMERR, CNAME loop */
};

struct dns_target {
  char host[256]; /* canonical name, or the address literal's address */
  uint16_t pref;
  size_t num_addrs;
  struct sockaddr_storage *addrs; /* IPv6 first; port 0 */
  enum dns_status status;         /* DNS_OK iff num_addrs > 0 */
  /* The host has addresses and every AAAA and A answer used for them
   * (NODATA included, CNAMEs followed) had AD: RFC 7672 §2.2.1-2, a
   * host whose TLSA records may count. 0 for an address literal. */
  int secure;
};

struct dns_route {
  enum dns_status status;      /* DNS_OK iff some target has an address */
  char detail[DNS_DETAIL_MAX]; /* for logs and bounces, e.g. "no MX/A/AAAA
                                  for example.test"; notes on DNS_OK */
  struct dns_target *targets;  /* by preference, shuffled within one */
  size_t num_targets;
  int secure; /* every answer used had AD (and there was one) */
  /* dns_route_mx: the MX answer had AD: the MX RRset, or the NODATA that
   * made the domain its own implicit MX (RFC 7672 §2.2.1: only then may
   * DANE apply). 0 for dns_route_host and address literals (no MX). */
  int mx_secure;
};

typedef void (*dns_route_cb)(void *arg, const struct dns_route *route);

struct dns_answer {
  enum dns_status status; /* DNS_OK iff num_rrs > 0 */
  uint16_t type;
  int secure;   /* AD on every answer used */
  uint32_t ttl; /* seconds this answer stays cached */
  size_t num_rrs;
  const struct dns_rr *rrs; /* the final owner's RRset, type `type` */
  int nxdomain;             /* DNS_NOT_FOUND: 1 NXDOMAIN, 0 NODATA */
  const char *owner;        /* the final owner (after CNAMEs) */
  size_t num_cnames;        /* CNAME links followed */
  const char *why;          /* short static reason when not DNS_OK */
};

typedef void (*dns_answer_cb)(void *arg, const struct dns_answer *answer);

struct dns_stats {
  uint64_t queries;      /* sent to a server (CNAME re-queries included) */
  uint64_t cache_hits;   /* lookups answered from the cache */
  uint64_t cache_misses; /* lookups that started a query */
  uint64_t coalesced;    /* lookups that joined a query in flight */
  uint64_t tempfails;    /* queries that ended in DNS_TEMPFAIL */
  uint64_t timeouts;     /* of those, by timeout */
  uint64_t evictions;    /* live entries evicted for room */
};

/* dns_new makes a resolver (cfg and io are copied; io is required).
 * Returns NULL with a reason in err (bad server address, c-ares failure,
 * memory). io->watch may be NULL only for a host that never waits for a
 * lookup. */
struct dns *dns_new(const struct dns_config *cfg, const struct dns_io *io,
                    char *err, size_t err_len);

/* dns_free cancels pending lookups (their callbacks are NOT called),
 * closes the sockets (io.watch(fd, 0, 0) first) and frees everything. */
void dns_free(struct dns *d);

/* dns_process_fd: fd is ready. Works with level- and edge-triggered hosts
 * (epoll EPOLLET, io_uring multishot poll): a TCP socket is read until it
 * has no more input. A stale call (fd already closed by c-ares, or its
 * number reused) does no harm. */
void dns_process_fd(struct dns *d, int fd, int readable, int writable);
void dns_tick(struct dns *d, int64_t now_ms);
/* dns_next_timeout_ms: milliseconds until dns_tick is needed; 0 if
 * callbacks wait for dns_dispatch; -1 if no query is in flight. */
int64_t dns_next_timeout_ms(struct dns *d, int64_t now_ms);
void dns_dispatch(struct dns *d);

/* dns_route_mx: where to deliver mail for domain (RFC 5321 §5.1): MX
 * hosts by preference (shuffled within one), each host's AAAA and A;
 * hosts without address kept with their status. No MX (NODATA): the
 * domain itself (implicit MX, preference 0). NXDOMAIN: DNS_NOT_FOUND. A
 * single MX "." (RFC 7505): DNS_NULL_MX (a "." beside real hosts is
 * skipped). MX hosts that are CNAMEs are followed and noted in detail. No
 * target with an address: DNS_NOT_FOUND if every failure was permanent,
 * else DNS_TEMPFAIL. An address literal
 * ("[192.0.2.1]", "[IPv6:2001:db8::1]") needs no lookup; "[name]" is
 * dns_route_host. Returns a handle (never 0), or 0 if out of memory (no
 * callback then). */
uint64_t dns_route_mx(struct dns *d, const char *domain, dns_route_cb cb,
                      void *arg);

/* dns_route_host: AAAA and A of one host, no MX (a relayhost "[host]"):
 * brackets optional; an address (literal or bare) needs no lookup. */
uint64_t dns_route_host(struct dns *d, const char *host, dns_route_cb cb,
                        void *arg);

/* dns_query: the RRset of (name, type) through the cache, CNAMEs followed.
 * For TXT (SPF, DMARC, DKIM, MTA-STS) and TLSA (DANE). */
uint64_t dns_query(struct dns *d, const char *name, uint16_t type,
                   dns_answer_cb cb, void *arg);

/* What a TLSA answer (RFC 6698) for one next-hop host means for DANE
 * (RFC 7672 §2.2), asked only for a host whose addresses were secure. */
enum dns_dane {
  DNS_DANE_USABLE,   /* secure, some usable record: TLS and a match needed */
  DNS_DANE_UNUSABLE, /* secure records, none usable: TLS needed (§2.2),
                        the certificate not checked */
  DNS_DANE_NONE,     /* secure NXDOMAIN or NODATA: no DANE for the host */
  DNS_DANE_INSECURE, /* an answer without AD: no DANE for the host */
  DNS_DANE_FAILED,   /* SERVFAIL (a validating resolver's answer to bogus
                        data too), timeout, or another failure: the host
                        must not get mail in plaintext (§2.2) */
};

/* dns_tlsa_usable: 1 if a TLSA record is one RFC 7672 §3.1.3 lets a
 * client use: DANE-TA(2) or DANE-EE(3), selector 0 or 1, matching type
 * 0 (some data), 1 (32 octets) or 2 (64 octets); as crypto/tls.h keeps. */
int dns_tlsa_usable(const struct dns_rr *rr);

/* dns_dane_verdict reads a TLSA answer; *out_num_usable counts its usable
 * records (0 unless DNS_DANE_USABLE). */
enum dns_dane dns_dane_verdict(const struct dns_answer *a,
                               size_t *out_num_usable);

/* dns_dane_name: "usable", "unusable", "none", "insecure", "failed". */
const char *dns_dane_name(enum dns_dane v);

/* dns_cancel: the lookup's callback will not run. */
void dns_cancel(struct dns *d, uint64_t handle);

void dns_get_stats(const struct dns *d, struct dns_stats *out);

/* dns_status_name: "ok", "not_found", "null_mx", "tempfail", "permfail". */
const char *dns_status_name(enum dns_status s);

#endif
