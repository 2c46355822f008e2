/* Unit tests: policy/dns against a scripted DNS server in this process.
 *
 * The fixture binds a UDP socket on 127.0.0.1 and answers the resolver's
 * queries from a small zone table (chasing CNAMEs inside it like an
 * authoritative server, unless told not to), in the same poll() loop that
 * drives the resolver: no thread, no timing races. The cache clock is the
 * fixture's now, which tests move forward to expire entries. Covered: MX
 * order and shuffle, implicit and null MX, hosts without address, CNAMEs
 * (chased, re-queried, looping), TXT and TLSA, positive, negative and
 * TEMPFAIL caching, sharing of queries in flight, cancel, free with
 * lookups pending, callbacks never inline, the cache bound, AD. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "policy/dns.h"

/* ---- the scripted server ---- */

struct zrr {
  const char *name;
  uint16_t type;
  uint32_t ttl;
  const char *data; /* A/AAAA address, MX "pref host", CNAME host, TXT
                       text, TLSA "u s m hex" */
};

/* Z_TC: over UDP a truncated answer (TC, no records), over TCP the
 * whole answer. Z_NOAD: no AD on answers for the name, even with fx->ad
 * (an insecure zone behind a validating resolver). */
enum zflag { Z_SERVFAIL = 1, Z_SILENT = 2, Z_TC = 4, Z_NOAD = 8 };

struct zname_flag {
  const char *name;
  int flags;
};

#define MAX_FDS 8
#define MAX_CONNS 4
#define MAX_COUNTED 64

struct fx {
  /* server: UDP and TCP on one port */
  int srv;
  int tcp;
  int conns[MAX_CONNS];
  size_t num_conns;
  unsigned num_tcp_queries;
  uint16_t port;
  const struct zrr *zone;
  size_t num_zone;
  const struct zname_flag *flags;
  int no_chase; /* answer a CNAME alone, without its target or SOA */
  int no_soa;   /* negative answers without SOA */
  int ad;       /* set AD on answers */
  char counted[MAX_COUNTED][DNS_NAME_TEXT_MAX];
  unsigned counts[MAX_COUNTED];
  unsigned num_queries;
  /* resolver */
  struct dns *dns;
  struct pollfd fds[MAX_FDS];
  size_t num_fds;
  int edge; /* wait with epoll, the resolver's sockets EPOLLET */
  int ep;
  int64_t offset_ms; /* added to the real clock: the cache's time */
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t fx_now(const struct fx *fx) {
  return mono_ms() + fx->offset_ms;
}

/* fx_advance moves the cache's clock on, as the host's next dns_tick. */
static void fx_advance(struct fx *fx, int64_t ms) {
  fx->offset_ms += ms;
  dns_tick(fx->dns, fx_now(fx));
}

/* A tiny response writer (names uncompressed). */
struct wbuf {
  uint8_t b[4096];
  size_t n;
};

static void w8(struct wbuf *w, unsigned v) {
  assert_true(w->n < sizeof w->b);
  w->b[w->n++] = (uint8_t)v;
}

static void w16(struct wbuf *w, unsigned v) {
  w8(w, v >> 8);
  w8(w, v & 0xff);
}

static void w32(struct wbuf *w, uint32_t v) {
  w16(w, v >> 16);
  w16(w, v & 0xffff);
}

static void wname(struct wbuf *w, const char *name) {
  if (strcmp(name, ".") != 0) {
    while (*name) {
      const char *dot = strchr(name, '.');
      size_t len = dot ? (size_t)(dot - name) : strlen(name);
      w8(w, (unsigned)len);
      for (size_t i = 0; i < len; i++) {
        w8(w, (uint8_t)name[i]);
      }
      name += len + (dot ? 1 : 0);
    }
  }
  w8(w, 0);
}

static void wrdata(struct wbuf *w, const struct zrr *rr) {
  uint8_t addr[16];
  unsigned pref, u, s, m;
  char host[256];
  switch (rr->type) {
  case DNS_TYPE_A:
    assert_int_equal(inet_pton(AF_INET, rr->data, addr), 1);
    for (int i = 0; i < 4; i++) {
      w8(w, addr[i]);
    }
    break;
  case DNS_TYPE_AAAA:
    assert_int_equal(inet_pton(AF_INET6, rr->data, addr), 1);
    for (int i = 0; i < 16; i++) {
      w8(w, addr[i]);
    }
    break;
  case DNS_TYPE_MX:
    assert_int_equal(sscanf(rr->data, "%u %255s", &pref, host), 2);
    w16(w, pref);
    wname(w, host);
    break;
  case DNS_TYPE_CNAME:
    wname(w, rr->data);
    break;
  case DNS_TYPE_TXT:
    w8(w, (unsigned)strlen(rr->data));
    for (const char *p = rr->data; *p; p++) {
      w8(w, (uint8_t)*p);
    }
    break;
  case DNS_TYPE_TLSA: {
    int used = 0;
    assert_int_equal(sscanf(rr->data, "%u %u %u %n", &u, &s, &m, &used), 3);
    w8(w, u);
    w8(w, s);
    w8(w, m);
    for (const char *p = rr->data + used; p[0] && p[1]; p += 2) {
      unsigned v;
      sscanf(p, "%2x", &v);
      w8(w, v);
    }
    break;
  }
  default:
    fail_msg("zone type %u", rr->type);
  }
}

static void wrr(struct wbuf *w, const struct zrr *rr) {
  wname(w, rr->name);
  w16(w, rr->type);
  w16(w, DNS_CLASS_IN);
  w32(w, rr->ttl);
  size_t at = w->n;
  w16(w, 0);
  wrdata(w, rr);
  size_t len = w->n - at - 2;
  w->b[at] = (uint8_t)(len >> 8);
  w->b[at + 1] = (uint8_t)len;
}

/* The SOA of every zone here: TTL 3600, MINIMUM 60 (negative TTL 60). */
static void wsoa(struct wbuf *w) {
  wname(w, "test");
  w16(w, DNS_TYPE_SOA);
  w16(w, DNS_CLASS_IN);
  w32(w, 3600);
  size_t at = w->n;
  w16(w, 0);
  wname(w, "ns.test");
  wname(w, "host.test");
  w32(w, 1);
  w32(w, 3600);
  w32(w, 600);
  w32(w, 86400);
  w32(w, 60);
  size_t len = w->n - at - 2;
  w->b[at + 1] = (uint8_t)len;
}

static int zname_flags(const struct fx *fx, const char *name) {
  for (const struct zname_flag *f = fx->flags; f && f->name; f++) {
    if (dns_name_equal(f->name, name)) {
      return f->flags;
    }
  }
  return 0;
}

static void count_query(struct fx *fx, const char *name) {
  fx->num_queries++;
  for (size_t i = 0; i < MAX_COUNTED; i++) {
    if (fx->counted[i][0] == '\0') {
      snprintf(fx->counted[i], sizeof fx->counted[i], "%s", name);
    }
    if (dns_name_equal(fx->counted[i], name)) {
      fx->counts[i]++;
      return;
    }
  }
}

static unsigned queries_for(const struct fx *fx, const char *name) {
  for (size_t i = 0; i < MAX_COUNTED && fx->counted[i][0]; i++) {
    if (dns_name_equal(fx->counted[i], name)) {
      return fx->counts[i];
    }
  }
  return 0;
}

/* What zone_answer found at the end of the chain. */
enum zfound { Z_DATA, Z_NODATA, Z_NXDOMAIN, Z_ALIAS_ONLY };

/* zone_answer adds the RRs of (name, type) to w, chasing CNAMEs inside
 * the zone (at most 10) unless fx->no_chase; *out_n is the number added. */
static enum zfound zone_answer(const struct fx *fx, struct wbuf *w,
                               const char *name, uint16_t type,
                               unsigned *out_n) {
  char cur[DNS_NAME_TEXT_MAX];
  snprintf(cur, sizeof cur, "%s", name);
  *out_n = 0;
  for (int hops = 0; hops < 10; hops++) {
    const struct zrr *alias = NULL;
    int exists = 0;
    for (size_t i = 0; i < fx->num_zone; i++) {
      const struct zrr *rr = &fx->zone[i];
      if (!dns_name_equal(rr->name, cur)) {
        continue;
      }
      exists = 1;
      if (rr->type == type) {
        wrr(w, rr);
        (*out_n)++;
      } else if (rr->type == DNS_TYPE_CNAME) {
        alias = rr;
      }
    }
    if (!exists) {
      return Z_NXDOMAIN;
    }
    if (alias == NULL || type == DNS_TYPE_CNAME) {
      return *out_n > 0 ? Z_DATA : Z_NODATA;
    }
    wrr(w, alias);
    (*out_n)++;
    if (fx->no_chase) {
      return Z_ALIAS_ONLY;
    }
    snprintf(cur, sizeof cur, "%s", alias->data);
  }
  return Z_ALIAS_ONLY; /* a loop: ten aliases */
}

/* server_reply builds the answer to query q (n octets) into w from the
 * zone. Returns 0 when the script says not to answer. */
static int server_reply(struct fx *fx, const uint8_t *q, size_t n, int over_tcp,
                        struct wbuf *w) {
  static struct dns_msg m;
  const char *why;
  assert_int_equal(dns_msg_parse(&m, &why, q, n), 0);
  assert_true(m.has_opt);    /* EDNS(0) on every query */
  assert_true(m.ad && m.rd); /* AD and RD asked for */
  count_query(fx, m.qname);
  fx->num_tcp_queries += over_tcp != 0;
  int flags = zname_flags(fx, m.qname);
  if (flags & Z_SILENT) {
    return 0;
  }
  int truncated = (flags & Z_TC) && !over_tcp;
  unsigned rcode = flags & Z_SERVFAIL ? DNS_RCODE_SERVFAIL : 0;
  w->n = 0;
  w16(w, m.id);
  w16(w, 0);
  w16(w, 1);
  w16(w, 0); /* ANCOUNT, NSCOUNT: filled below */
  w16(w, 0);
  w16(w, 0);
  wname(w, m.qname);
  w16(w, m.qtype);
  w16(w, DNS_CLASS_IN);
  unsigned an = 0, ns = 0;
  if (rcode == 0 && !truncated) {
    enum zfound found = zone_answer(fx, w, m.qname, m.qtype, &an);
    if (found == Z_NXDOMAIN) {
      rcode = DNS_RCODE_NXDOMAIN;
    }
    if ((found == Z_NXDOMAIN || found == Z_NODATA) && !fx->no_soa) {
      wsoa(w); /* RFC 2308 §3: negative answers carry the SOA */
      ns = 1;
    }
  }
  int ad = fx->ad && !(flags & Z_NOAD);
  unsigned hflags = 0x8000 | 0x0400 | 0x0100 | rcode | (ad ? 0x0020 : 0) |
                    (truncated ? 0x0200 : 0);
  w->b[2] = (uint8_t)(hflags >> 8);
  w->b[3] = (uint8_t)hflags;
  w->b[7] = (uint8_t)an;
  w->b[9] = (uint8_t)ns;
  return 1;
}

static void server_udp(struct fx *fx) {
  uint8_t q[2048];
  struct sockaddr_storage peer;
  socklen_t peer_len = sizeof peer;
  ssize_t n =
      recvfrom(fx->srv, q, sizeof q, 0, (struct sockaddr *)&peer, &peer_len);
  struct wbuf w;
  if (n > 0 && server_reply(fx, q, (size_t)n, 0, &w)) {
    sendto(fx->srv, w.b, w.n, 0, (struct sockaddr *)&peer, peer_len);
  }
}

static void epoll_watch(struct fx *fx, int op, int fd, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.fd = fd};
  assert_int_equal(epoll_ctl(fx->ep, op, fd, &ev), 0);
}

static void server_accept(struct fx *fx) {
  int c = accept4(fx->tcp, NULL, NULL, SOCK_NONBLOCK);
  if (c < 0) {
    return;
  }
  assert_true(fx->num_conns < MAX_CONNS);
  fx->conns[fx->num_conns++] = c;
  epoll_watch(fx, EPOLL_CTL_ADD, c, EPOLLIN); /* level: the server's */
}

/* server_tcp answers the length-prefixed queries on connection i. Each
 * answer goes out with its length in one send, so the resolver finds
 * both queued on its socket at once. */
static void server_tcp(struct fx *fx, size_t i) {
  uint8_t in[4096], out[sizeof(((struct wbuf *)0)->b) + 2];
  int c = fx->conns[i];
  ssize_t n = recv(c, in, sizeof in, 0);
  if (n <= 0) {
    close(c); /* also leaves the epoll set */
    fx->conns[i] = fx->conns[--fx->num_conns];
    return;
  }
  for (size_t off = 0; off + 2 <= (size_t)n;) {
    size_t len = (size_t)in[off] << 8 | in[off + 1];
    struct wbuf w;
    assert_true(off + 2 + len <= (size_t)n); /* small queries: whole */
    if (server_reply(fx, in + off + 2, len, 1, &w)) {
      out[0] = (uint8_t)(w.n >> 8);
      out[1] = (uint8_t)w.n;
      memcpy(out + 2, w.b, w.n);
      assert_int_equal(send(c, out, w.n + 2, 0), (ssize_t)(w.n + 2));
    }
    off += 2 + len;
  }
}

/* server_ready handles readiness on one of the server's sockets; 0 if fd
 * is not one of them. */
static int server_ready(struct fx *fx, int fd) {
  if (fd == fx->srv) {
    server_udp(fx);
    return 1;
  }
  if (fd == fx->tcp) {
    server_accept(fx);
    return 1;
  }
  for (size_t i = 0; i < fx->num_conns; i++) {
    if (fx->conns[i] == fd) {
      server_tcp(fx, i);
      return 1;
    }
  }
  return 0;
}

/* ---- the resolver side ---- */

static void fx_watch(void *ctx, int fd, int want_read, int want_write) {
  struct fx *fx = ctx;
  size_t i = 0;
  while (i < fx->num_fds && fx->fds[i].fd != fd) {
    i++;
  }
  if (!want_read && !want_write) {
    if (i < fx->num_fds) {
      if (fx->edge) {
        epoll_watch(fx, EPOLL_CTL_DEL, fd, 0); /* before c-ares closes it */
      }
      fx->fds[i] = fx->fds[--fx->num_fds];
    }
    return;
  }
  if (fx->edge) {
    uint32_t ev = (want_read ? EPOLLIN : 0) | (want_write ? EPOLLOUT : 0);
    epoll_watch(fx, i == fx->num_fds ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd,
                ev | EPOLLET);
  }
  if (i == fx->num_fds) {
    assert_true(fx->num_fds < MAX_FDS);
    fx->num_fds++;
  }
  fx->fds[i].fd = fd;
  fx->fds[i].events =
      (short)((want_read ? POLLIN : 0) | (want_write ? POLLOUT : 0));
}

static struct dns *fx_dns(struct fx *fx, unsigned timeout_ms, unsigned tries,
                          size_t cache_max) {
  char server[64], err[256] = "";
  snprintf(server, sizeof server, "127.0.0.1:%u", fx->port);
  const char *servers[] = {server};
  struct dns_config cfg = {.servers = servers,
                           .num_servers = 1,
                           .timeout_ms = timeout_ms,
                           .tries = tries,
                           .cache_max = cache_max};
  struct dns_io io = {.ctx = fx, .watch = fx_watch};
  struct dns *d = dns_new(&cfg, &io, err, sizeof err);
  if (d == NULL) {
    fail_msg("dns_new: %s", err);
  }
  dns_tick(d, fx_now(fx));
  return d;
}

/* server_bind binds the UDP socket and a TCP listener to one free port. */
static void server_bind(struct fx *fx) {
  for (int attempt = 0; attempt < 20; attempt++) {
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sin;
    fx->srv = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    fx->tcp = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(fx->srv >= 0 && fx->tcp >= 0);
    assert_int_equal(bind(fx->srv, (struct sockaddr *)&sin, sizeof sin), 0);
    getsockname(fx->srv, (struct sockaddr *)&sin, &len);
    if (bind(fx->tcp, (struct sockaddr *)&sin, sizeof sin) == 0 &&
        listen(fx->tcp, 8) == 0) {
      fx->port = ntohs(sin.sin_port);
      return;
    }
    close(fx->srv);
    close(fx->tcp);
  }
  fail_msg("no free UDP+TCP port");
}

static void fx_init(struct fx *fx, const struct zrr *zone, size_t num_zone) {
  memset(fx, 0, sizeof(*fx));
  fx->zone = zone;
  fx->num_zone = num_zone;
  server_bind(fx);
  fx->ep = epoll_create1(0);
  assert_true(fx->ep >= 0);
  epoll_watch(fx, EPOLL_CTL_ADD, fx->srv, EPOLLIN);
  epoll_watch(fx, EPOLL_CTL_ADD, fx->tcp, EPOLLIN);
  fx->dns = fx_dns(fx, 500, 2, 0);
}

static void fx_cleanup(struct fx *fx) {
  dns_free(fx->dns);
  assert_int_equal(fx->num_fds, 0); /* every socket un-watched */
  for (size_t i = 0; i < fx->num_conns; i++) {
    close(fx->conns[i]);
  }
  close(fx->srv);
  close(fx->tcp);
  close(fx->ep);
}

/* fx_wait_level waits with poll(): level-triggered, like the CLI. */
static void fx_wait_level(struct fx *fx, int timeout) {
  struct pollfd p[2 + MAX_CONNS + MAX_FDS];
  size_t n = 0, first_dns;
  p[n++] = (struct pollfd){.fd = fx->srv, .events = POLLIN};
  p[n++] = (struct pollfd){.fd = fx->tcp, .events = POLLIN};
  for (size_t i = 0; i < fx->num_conns; i++) {
    p[n++] = (struct pollfd){.fd = fx->conns[i], .events = POLLIN};
  }
  first_dns = n;
  memcpy(p + n, fx->fds, fx->num_fds * sizeof(p[0]));
  n += fx->num_fds;
  poll(p, n, timeout);
  for (size_t i = 0; i < first_dns; i++) {
    if (p[i].revents != 0) {
      server_ready(fx, p[i].fd);
    }
  }
  for (size_t i = first_dns; i < n; i++) {
    if (p[i].revents != 0) {
      dns_process_fd(fx->dns, p[i].fd, (p[i].revents & POLLIN) != 0,
                     (p[i].revents & POLLOUT) != 0);
    }
  }
}

/* fx_wait_edge waits with epoll: the resolver's sockets edge-triggered,
 * as io_uring multishot polls behave in the daemon. */
static void fx_wait_edge(struct fx *fx, int timeout) {
  struct epoll_event ev[16];
  int n = epoll_wait(fx->ep, ev, 16, timeout);
  for (int i = 0; i < n; i++) {
    int fd = ev[i].data.fd;
    if (!server_ready(fx, fd)) {
      dns_process_fd(fx->dns, fd, (ev[i].events & (EPOLLIN | EPOLLERR)) != 0,
                     (ev[i].events & EPOLLOUT) != 0);
    }
  }
}

/* fx_turn runs one loop turn: dispatch, wait for the server's and the
 * resolver's sockets, answer, process, tick. */
static void fx_turn(struct fx *fx) {
  dns_dispatch(fx->dns);
  int64_t t = dns_next_timeout_ms(fx->dns, fx_now(fx));
  int timeout = t < 0 || t > 20 ? 20 : (int)t;
  if (fx->edge) {
    fx_wait_edge(fx, timeout);
  } else {
    fx_wait_level(fx, timeout);
  }
  dns_tick(fx->dns, fx_now(fx));
}

/* fx_run turns the loop until *done reaches want (at most 5 s). */
static void fx_run(struct fx *fx, const int *done, int want) {
  int64_t deadline = mono_ms() + 5000;
  while (*done < want) {
    if (mono_ms() > deadline) {
      fail_msg("no answer within 5 s (%d of %d)", *done, want);
    }
    fx_turn(fx);
  }
}

/* ---- callbacks that copy what they are given ---- */

struct got_route {
  int done;
  enum dns_status status;
  char detail[DNS_DETAIL_MAX];
  int secure, mx_secure;
  size_t num_targets;
  struct {
    char host[256];
    uint16_t pref;
    enum dns_status status;
    size_t num_addrs;
    char addr[4][64];
    int secure;
  } t[DNS_ROUTE_MAX_HOSTS];
};

static void on_route(void *arg, const struct dns_route *r) {
  struct got_route *g = arg;
  g->done++;
  g->status = r->status;
  g->secure = r->secure;
  g->mx_secure = r->mx_secure;
  snprintf(g->detail, sizeof g->detail, "%s", r->detail);
  g->num_targets = r->num_targets;
  for (size_t i = 0; i < r->num_targets; i++) {
    const struct dns_target *t = &r->targets[i];
    snprintf(g->t[i].host, sizeof g->t[i].host, "%s", t->host);
    g->t[i].pref = t->pref;
    g->t[i].status = t->status;
    g->t[i].num_addrs = t->num_addrs;
    g->t[i].secure = t->secure;
    for (size_t k = 0; k < t->num_addrs && k < 4; k++) {
      const struct sockaddr *sa = (const struct sockaddr *)&t->addrs[k];
      const void *a =
          sa->sa_family == AF_INET
              ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr
              : (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr;
      inet_ntop(sa->sa_family, a, g->t[i].addr[k], sizeof g->t[i].addr[k]);
    }
  }
}

struct got_answer {
  int done;
  enum dns_status status;
  int nxdomain, secure;
  enum dns_dane dane; /* dns_dane_verdict of the answer */
  size_t num_usable;
  uint32_t ttl;
  size_t num_rrs, num_cnames;
  char owner[DNS_NAME_TEXT_MAX];
  char text[512]; /* TXT data, or TLSA "u s m hex" */
};

static void on_answer(void *arg, const struct dns_answer *a) {
  struct got_answer *g = arg;
  g->done++;
  g->status = a->status;
  g->nxdomain = a->nxdomain;
  g->secure = a->secure;
  g->dane = dns_dane_verdict(a, &g->num_usable);
  g->ttl = a->ttl;
  g->num_rrs = a->num_rrs;
  g->num_cnames = a->num_cnames;
  snprintf(g->owner, sizeof g->owner, "%s", a->owner);
  g->text[0] = '\0';
  if (a->num_rrs > 0 && a->rrs[0].type == DNS_TYPE_TXT) {
    snprintf(g->text, sizeof g->text, "%.*s", (int)a->rrs[0].rd.txt.data_len,
             (const char *)a->rrs[0].rd.txt.data);
  } else if (a->num_rrs > 0 && a->rrs[0].type == DNS_TYPE_TLSA) {
    const struct dns_rr *rr = &a->rrs[0];
    int n = snprintf(g->text, sizeof g->text, "%u %u %u ", rr->rd.tlsa.usage,
                     rr->rd.tlsa.selector, rr->rd.tlsa.mtype);
    for (size_t i = 0; i < rr->rd.tlsa.data_len; i++) {
      n += snprintf(g->text + n, sizeof g->text - (size_t)n, "%02x",
                    rr->rd.tlsa.data[i]);
    }
  }
}

static struct dns_stats stats(const struct fx *fx) {
  struct dns_stats s;
  dns_get_stats(fx->dns, &s);
  return s;
}

/* ---- the zone ---- */

static const struct zrr zone[] = {
    {"example.test", DNS_TYPE_MX, 300, "20 b.example.test"},
    {"example.test", DNS_TYPE_MX, 300, "10 a.example.test"},
    {"example.test", DNS_TYPE_MX, 300, "10 c.example.test"},
    {"example.test", DNS_TYPE_MX, 300, "30 noaddr.example.test"},
    {"example.test", DNS_TYPE_MX, 300, "40 alias.example.test"},
    {"example.test", DNS_TYPE_TXT, 300, "v=spf1 -all"},
    {"a.example.test", DNS_TYPE_A, 300, "192.0.2.1"},
    {"a.example.test", DNS_TYPE_AAAA, 300, "2001:db8::1"},
    {"b.example.test", DNS_TYPE_A, 300, "192.0.2.2"},
    {"c.example.test", DNS_TYPE_A, 300, "192.0.2.3"},
    {"noaddr.example.test", DNS_TYPE_TXT, 300, "no address here"},
    {"alias.example.test", DNS_TYPE_CNAME, 120, "real.example.test"},
    {"real.example.test", DNS_TYPE_A, 300, "192.0.2.4"},
    {"implicit.test", DNS_TYPE_A, 300, "192.0.2.5"},
    {"nullmx.test", DNS_TYPE_MX, 300, "0 ."},
    {"txtonly.test", DNS_TYPE_TXT, 300, "hello"},
    {"short.test", DNS_TYPE_A, 30, "192.0.2.6"},
    {"zero.test", DNS_TYPE_A, 0, "192.0.2.7"},
    {"loop1.test", DNS_TYPE_CNAME, 60, "loop2.test"},
    {"loop2.test", DNS_TYPE_CNAME, 60, "loop1.test"},
    {"far.test", DNS_TYPE_CNAME, 60, "target.other.test"},
    {"target.other.test", DNS_TYPE_A, 300, "192.0.2.8"},
    {"_25._tcp.a.example.test", DNS_TYPE_TLSA, 300, "3 1 1 0a0b0c"},
    {"sf.test", DNS_TYPE_A, 300, "192.0.2.9"},
    {"silent.test", DNS_TYPE_A, 300, "192.0.2.10"},
    {"big.test", DNS_TYPE_TXT, 300, "too big for UDP, says the server"},
    {"big.test", DNS_TYPE_A, 300, "192.0.2.11"},
    /* DANE: a signed zone (fx->ad) with an unsigned corner (Z_NOAD). */
    {"dane.test", DNS_TYPE_MX, 300, "10 mx1.dane.test"},
    {"dane.test", DNS_TYPE_MX, 300, "20 mx2.dane.test"},
    {"mx1.dane.test", DNS_TYPE_A, 300, "192.0.2.21"},
    {"mx1.dane.test", DNS_TYPE_AAAA, 300, "2001:db8::21"},
    {"mx2.dane.test", DNS_TYPE_A, 300, "192.0.2.22"},
    {"insecure-mx.test", DNS_TYPE_MX, 300, "10 mx1.dane.test"},
    {"implicit.dane.test", DNS_TYPE_A, 300, "192.0.2.24"},
    {"cname.dane.test", DNS_TYPE_MX, 300, "10 calias.dane.test"},
    {"calias.dane.test", DNS_TYPE_CNAME, 300, "ctarget.dane.test"},
    {"ctarget.dane.test", DNS_TYPE_A, 300, "192.0.2.23"},
    {"_25._tcp.ok.dane.test", DNS_TYPE_TLSA, 300,
     "3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
    {"_25._tcp.ok.dane.test", DNS_TYPE_TLSA, 300,
     "0 0 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
    {"_25._tcp.pkix.dane.test", DNS_TYPE_TLSA, 300,
     "1 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
    {"_25._tcp.short.dane.test", DNS_TYPE_TLSA, 300, "3 1 1 0a0b0c"},
    {"_25._tcp.noad.dane.test", DNS_TYPE_TLSA, 300,
     "3 1 1 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"},
};
#define ZONE_LEN (sizeof(zone) / sizeof(zone[0]))

static const struct zname_flag zflags[] = {
    {"sf.test", Z_SERVFAIL},
    {"silent.test", Z_SILENT},
    {"big.test", Z_TC},
    {"mx2.dane.test", Z_NOAD},
    {"insecure-mx.test", Z_NOAD},
    {"ctarget.dane.test", Z_NOAD},
    {"_25._tcp.noad.dane.test", Z_NOAD},
    {"_25._tcp.sf.dane.test", Z_SERVFAIL},
    {NULL, 0},
};

static int setup(void **state) {
  struct fx *fx = malloc(sizeof(*fx));
  fx_init(fx, zone, ZONE_LEN);
  fx->flags = zflags;
  *state = fx;
  return 0;
}

static int teardown(void **state) {
  struct fx *fx = *state;
  fx_cleanup(fx);
  free(fx);
  return 0;
}

/* ---- tests ---- */

static void test_mx_route(void **state) {
  struct fx *fx = *state;
  struct got_route g = {0};
  assert_int_not_equal(dns_route_mx(fx->dns, "Example.TEST.", on_route, &g), 0);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_OK);
  assert_int_equal(g.num_targets, 5);
  static const uint16_t prefs[] = {10, 10, 20, 30, 40};
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(g.t[i].pref, prefs[i]);
  }
  /* a and c share preference 10, in either order. */
  size_t ia = strcmp(g.t[0].host, "a.example.test") == 0 ? 0 : 1;
  assert_string_equal(g.t[ia].host, "a.example.test");
  assert_string_equal(g.t[1 - ia].host, "c.example.test");
  assert_int_equal(g.t[ia].num_addrs, 2);
  assert_string_equal(g.t[ia].addr[0], "2001:db8::1"); /* IPv6 first */
  assert_string_equal(g.t[ia].addr[1], "192.0.2.1");
  assert_string_equal(g.t[2].host, "b.example.test");
  /* A host without address stays, with its status. */
  assert_string_equal(g.t[3].host, "noaddr.example.test");
  assert_int_equal(g.t[3].num_addrs, 0);
  assert_int_equal(g.t[3].status, DNS_NOT_FOUND);
  /* An MX host that is a CNAME is followed, and said so. */
  assert_string_equal(g.t[4].host, "alias.example.test");
  assert_string_equal(g.t[4].addr[0], "192.0.2.4");
  assert_non_null(strstr(g.detail, "alias.example.test is an alias"));
  assert_int_equal(g.secure, 0); /* no AD from this server */
}

/* Equal preferences come in both orders over repeated lookups (answered
 * from the cache: the shuffle is per lookup). */
static void test_mx_shuffle(void **state) {
  struct fx *fx = *state;
  int seen_a_first = 0, seen_c_first = 0;
  for (int i = 0; i < 64 && !(seen_a_first && seen_c_first); i++) {
    struct got_route g = {0};
    dns_route_mx(fx->dns, "example.test", on_route, &g);
    fx_run(fx, &g.done, 1);
    seen_a_first |= strcmp(g.t[0].host, "a.example.test") == 0;
    seen_c_first |= strcmp(g.t[0].host, "c.example.test") == 0;
  }
  assert_true(seen_a_first && seen_c_first);
  /* One MX query, and one AAAA and A per host, for all 64 lookups. */
  assert_int_equal(queries_for(fx, "example.test"), 1);
  assert_int_equal(queries_for(fx, "a.example.test"), 2);
}

static void test_implicit_null_and_none(void **state) {
  struct fx *fx = *state;
  struct got_route g = {0};
  dns_route_mx(fx->dns, "implicit.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_OK);
  assert_int_equal(g.num_targets, 1);
  assert_string_equal(g.t[0].host, "implicit.test");
  assert_int_equal(g.t[0].pref, 0);
  assert_string_equal(g.t[0].addr[0], "192.0.2.5");

  memset(&g, 0, sizeof g);
  dns_route_mx(fx->dns, "nullmx.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_NULL_MX);
  assert_int_equal(g.num_targets, 0);
  assert_non_null(strstr(g.detail, "null MX"));

  memset(&g, 0, sizeof g);
  dns_route_mx(fx->dns, "txtonly.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_NOT_FOUND);
  assert_string_equal(g.detail, "no MX/A/AAAA for txtonly.test");

  memset(&g, 0, sizeof g);
  dns_route_mx(fx->dns, "nowhere.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_NOT_FOUND);
  assert_non_null(strstr(g.detail, "NXDOMAIN"));
}

/* Literals, bad names and numeric hosts need no query; their callbacks
 * still come from dispatch, never from the call itself. */
static void test_no_query_needed(void **state) {
  struct fx *fx = *state;
  struct got_route g[5];
  memset(g, 0, sizeof g);
  dns_route_mx(fx->dns, "[192.0.2.77]", on_route, &g[0]);
  dns_route_mx(fx->dns, "[IPv6:2001:db8::77]", on_route, &g[1]);
  dns_route_mx(fx->dns, "bad..name", on_route, &g[2]);
  dns_route_host(fx->dns, "192.0.2.78", on_route, &g[3]);
  dns_route_mx(fx->dns, "under_score.test", on_route, &g[4]);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(g[i].done, 0);
  }
  dns_dispatch(fx->dns);
  assert_int_equal(g[0].status, DNS_OK);
  assert_string_equal(g[0].t[0].addr[0], "192.0.2.77");
  assert_int_equal(g[1].status, DNS_OK);
  assert_string_equal(g[1].t[0].addr[0], "2001:db8::77");
  assert_int_equal(g[2].status, DNS_PERMFAIL);
  assert_int_equal(g[3].status, DNS_OK);
  assert_string_equal(g[3].t[0].addr[0], "192.0.2.78");
  assert_int_equal(g[4].status, DNS_PERMFAIL);
  assert_int_equal(fx->num_queries, 0);
  assert_int_equal(stats(fx).queries, 0);
}

static void test_query_txt_tlsa(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0}, t = {0};
  dns_query(fx->dns, "example.test", DNS_TYPE_TXT, on_answer, &a);
  dns_query(fx->dns, "_25._tcp.a.example.test", DNS_TYPE_TLSA, on_answer, &t);
  fx_run(fx, &t.done, 1);
  fx_run(fx, &a.done, 1);
  assert_int_equal(a.status, DNS_OK);
  assert_string_equal(a.text, "v=spf1 -all");
  assert_int_equal(a.ttl, 300);
  assert_int_equal(t.status, DNS_OK);
  assert_string_equal(t.text, "3 1 1 0a0b0c");
}

/* Answers stay for their TTL (by the clock given to dns_tick); TTL 0 is
 * not kept. */
static void test_positive_cache(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0};
  for (int i = 0; i < 3; i++) {
    dns_query(fx->dns, "short.test", DNS_TYPE_A, on_answer, &a);
    fx_run(fx, &a.done, i + 1);
  }
  assert_int_equal(queries_for(fx, "short.test"), 1);
  assert_int_equal(stats(fx).cache_hits, 2);
  fx_advance(fx, 31 * 1000);
  dns_query(fx->dns, "short.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 4);
  assert_int_equal(queries_for(fx, "short.test"), 2);

  for (int i = 0; i < 2; i++) {
    dns_query(fx->dns, "zero.test", DNS_TYPE_A, on_answer, &a);
    fx_run(fx, &a.done, 5 + i);
    assert_int_equal(a.status, DNS_OK);
  }
  assert_int_equal(queries_for(fx, "zero.test"), 2);
}

/* NXDOMAIN and NODATA stay min(SOA TTL, MINIMUM) = 60 s (RFC 2308). */
static void test_negative_cache(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0};
  dns_query(fx->dns, "gone.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 1);
  assert_int_equal(a.status, DNS_NOT_FOUND);
  assert_int_equal(a.nxdomain, 1);
  assert_int_equal(a.ttl, 60);
  dns_query(fx->dns, "txtonly.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 2);
  assert_int_equal(a.status, DNS_NOT_FOUND);
  assert_int_equal(a.nxdomain, 0);
  fx_advance(fx, 59 * 1000);
  dns_query(fx->dns, "gone.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 3);
  assert_int_equal(queries_for(fx, "gone.test"), 1);
  fx_advance(fx, 2 * 1000);
  dns_query(fx->dns, "gone.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 4);
  assert_int_equal(queries_for(fx, "gone.test"), 2);
}

/* Without an SOA a negative answer stays DNS_NEG_TTL_NO_SOA. */
static void test_negative_no_soa(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0};
  fx->no_soa = 1;
  dns_query(fx->dns, "gone.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 1);
  assert_int_equal(a.status, DNS_NOT_FOUND);
  assert_int_equal(a.ttl, DNS_NEG_TTL_NO_SOA);
}

/* SERVFAIL is TEMPFAIL, kept DNS_TEMPFAIL_TTL seconds: a dead server is
 * not asked again by every message. */
static void test_tempfail_cache(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0};
  dns_query(fx->dns, "sf.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 1);
  assert_int_equal(a.status, DNS_TEMPFAIL);
  unsigned asked = queries_for(fx, "sf.test"); /* c-ares retries */
  assert_true(asked >= 1);
  dns_query(fx->dns, "sf.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 2);
  assert_int_equal(queries_for(fx, "sf.test"), asked);
  fx_advance(fx, (DNS_TEMPFAIL_TTL + 1) * 1000);
  dns_query(fx->dns, "sf.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 3);
  assert_int_equal(queries_for(fx, "sf.test"), 2 * asked);
  assert_int_equal(stats(fx).tempfails, 2);
}

static void test_timeout(void **state) {
  struct fx *fx = *state;
  dns_free(fx->dns);
  fx->dns = fx_dns(fx, 100, 1, 0);
  struct got_route g = {0};
  int64_t start = mono_ms();
  dns_route_host(fx->dns, "silent.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_TEMPFAIL);
  assert_non_null(strstr(g.detail, "timeout"));
  assert_true(mono_ms() - start < 2000);
  assert_int_equal(stats(fx).timeouts, 2); /* AAAA and A */
}

/* Identical lookups in flight share one query; each gets its callback. */
static void test_coalesce(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0};
  struct got_route r = {0};
  for (int i = 0; i < 5; i++) {
    dns_query(fx->dns, "b.example.test", DNS_TYPE_A, on_answer, &a);
  }
  dns_route_host(fx->dns, "b.example.test", on_route, &r);
  fx_run(fx, &a.done, 5);
  fx_run(fx, &r.done, 1);
  assert_int_equal(queries_for(fx, "b.example.test"), 2); /* A, AAAA */
  assert_int_equal(stats(fx).coalesced, 5);
  assert_int_equal(r.status, DNS_OK);
}

/* A cancelled lookup's callback never runs; its answer is still cached. */
static void test_cancel(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0}, b = {0};
  uint64_t h = dns_query(fx->dns, "c.example.test", DNS_TYPE_A, on_answer, &a);
  dns_query(fx->dns, "c.example.test", DNS_TYPE_A, on_answer, &b);
  dns_cancel(fx->dns, h);
  dns_cancel(fx->dns, h); /* twice: a no-op */
  dns_cancel(fx->dns, 987654);
  fx_run(fx, &b.done, 1);
  assert_int_equal(a.done, 0);
  /* Cancelled while answered from the cache, before dispatch. */
  h = dns_query(fx->dns, "c.example.test", DNS_TYPE_A, on_answer, &a);
  dns_cancel(fx->dns, h);
  dns_dispatch(fx->dns);
  assert_int_equal(a.done, 0);
  assert_int_equal(queries_for(fx, "c.example.test"), 1);
}

/* dns_free with lookups in flight and waiting for dispatch: no callback,
 * nothing leaked (the sanitizer build checks), every fd un-watched. */
static void test_free_pending(void **state) {
  struct fx *fx = *state;
  struct got_route g = {0}, lit = {0};
  struct got_answer a = {0}, b = {0};
  dns_query(fx->dns, "b.example.test", DNS_TYPE_A, on_answer, &b);
  dns_route_mx(fx->dns, "example.test", on_route, &g);
  dns_query(fx->dns, "silent.test", DNS_TYPE_A, on_answer, &a);
  dns_route_mx(fx->dns, "[192.0.2.1]", on_route, &lit);
  /* Let the server answer the first query and the resolver read it, but
   * no dispatch: that lookup is finished and waiting. */
  struct pollfd p = {.fd = fx->srv, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 2000), 1);
  server_udp(fx);
  assert_true(fx->num_fds > 0);
  p = fx->fds[0];
  assert_int_equal(poll(&p, 1, 2000), 1);
  dns_process_fd(fx->dns, p.fd, 1, 0);
  dns_free(fx->dns);
  assert_int_equal(g.done + lit.done + a.done + b.done, 0);
  assert_int_equal(fx->num_fds, 0);
  fx->dns = fx_dns(fx, 500, 2, 0);
}

/* A server that does not chase an alias (no SOA after it): the resolver
 * asks for the target itself. A loop is a permanent failure. */
static void test_cname_requery_and_loop(void **state) {
  struct fx *fx = *state;
  struct got_answer a = {0};
  fx->no_chase = 1;
  dns_query(fx->dns, "far.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 1);
  assert_int_equal(a.status, DNS_OK);
  assert_int_equal(a.num_cnames, 1);
  assert_string_equal(a.owner, "target.other.test");
  assert_int_equal(a.ttl, 60); /* the alias's TTL bounds the answer */
  assert_int_equal(queries_for(fx, "far.test"), 1);
  assert_int_equal(queries_for(fx, "target.other.test"), 1);

  dns_query(fx->dns, "loop1.test", DNS_TYPE_A, on_answer, &a);
  fx_run(fx, &a.done, 2);
  assert_int_equal(a.status, DNS_PERMFAIL);
  assert_true(queries_for(fx, "loop1.test") + queries_for(fx, "loop2.test") <=
              DNS_MSG_MAX_CNAME + 1);
  fx->no_chase = 0;
  dns_query(fx->dns, "loop2.test", DNS_TYPE_TXT, on_answer, &a);
  fx_run(fx, &a.done, 3);
  assert_int_equal(a.status, DNS_PERMFAIL);
}

/* The cache holds at most cache_max entries. */
static void test_cache_bound(void **state) {
  struct fx *fx = *state;
  dns_free(fx->dns);
  fx->dns = fx_dns(fx, 500, 2, 4);
  struct got_answer a = {0};
  char name[64];
  for (int i = 0; i < 10; i++) {
    snprintf(name, sizeof name, "n%d.test", i);
    dns_query(fx->dns, name, DNS_TYPE_A, on_answer, &a);
    fx_run(fx, &a.done, i + 1);
  }
  assert_int_equal(stats(fx).evictions, 6);
  dns_query(fx->dns, "n9.test", DNS_TYPE_A, on_answer, &a); /* kept */
  dns_query(fx->dns, "n0.test", DNS_TYPE_A, on_answer, &a); /* evicted */
  fx_run(fx, &a.done, 12);
  assert_int_equal(queries_for(fx, "n9.test"), 1);
  assert_int_equal(queries_for(fx, "n0.test"), 2);
}

/* AD on every answer used makes the route secure. */
static void test_secure(void **state) {
  struct fx *fx = *state;
  struct got_route g = {0};
  fx->ad = 1;
  dns_route_mx(fx->dns, "implicit.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_OK);
  assert_int_equal(g.secure, 1);
}

/* RFC 7672 §2.2.1: the MX answer's AD and each host's (its AAAA and A
 * answers, NODATA included) are kept apart, so one insecure host or an
 * insecure MX RRset does not hide the others. */
struct secure_case {
  const char *label;
  int host_route; /* dns_route_host instead of dns_route_mx */
  int no_chase;   /* the server leaves CNAMEs to the resolver */
  const char *name;
  int want_mx_secure;
  size_t num_targets;
  const char *host[2];
  int want_secure[2];
};

static void test_secure_per_target(void **state) {
  static const struct secure_case cases[] = {
      {"signed MX, one unsigned host",
       0,
       0,
       "dane.test",
       1,
       2,
       {"mx1.dane.test", "mx2.dane.test"},
       {1, 0}},
      {"unsigned MX, signed host",
       0,
       0,
       "insecure-mx.test",
       0,
       1,
       {"mx1.dane.test"},
       {1}},
      {"implicit MX: secure NODATA",
       0,
       0,
       "implicit.dane.test",
       1,
       1,
       {"implicit.dane.test"},
       {1}},
      {"CNAME'd host, unsigned target",
       0,
       1,
       "cname.dane.test",
       1,
       1,
       {"calias.dane.test"},
       {0}},
      {"host route: no MX",
       1,
       0,
       "mx1.dane.test",
       0,
       1,
       {"mx1.dane.test"},
       {1}},
      {"address literal", 0, 0, "[192.0.2.30]", 0, 1, {"192.0.2.30"}, {0}},
  };
  struct fx *fx = *state;
  fx->ad = 1;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct secure_case *c = &cases[i];
    struct got_route g = {0};
    fx->no_chase = c->no_chase;
    if (c->host_route) {
      dns_route_host(fx->dns, c->name, on_route, &g);
    } else {
      dns_route_mx(fx->dns, c->name, on_route, &g);
    }
    fx_run(fx, &g.done, 1);
    if (g.status != DNS_OK || g.num_targets != c->num_targets ||
        g.mx_secure != c->want_mx_secure) {
      fail_msg("%s: got status %s, %zu targets, mx_secure %d; want ok, %zu, "
               "%d",
               c->label, dns_status_name(g.status), g.num_targets, g.mx_secure,
               c->num_targets, c->want_mx_secure);
    }
    for (size_t k = 0; k < c->num_targets; k++) {
      if (strcmp(g.t[k].host, c->host[k]) != 0 ||
          g.t[k].secure != c->want_secure[k]) {
        fail_msg("%s: target %zu got %s secure %d, want %s secure %d", c->label,
                 k, g.t[k].host, g.t[k].secure, c->host[k], c->want_secure[k]);
      }
    }
  }
}

/* A TLSA answer's AD reaches dns_dane_verdict through the cache. */
struct dane_case {
  const char *label;
  const char *name;
  enum dns_dane want;
  size_t want_usable;
};

static void test_dane_verdict_answers(void **state) {
  static const struct dane_case cases[] = {
      {"usable and PKIX records", "_25._tcp.ok.dane.test", DNS_DANE_USABLE, 1},
      {"PKIX-EE only", "_25._tcp.pkix.dane.test", DNS_DANE_UNUSABLE, 0},
      {"digest of the wrong length", "_25._tcp.short.dane.test",
       DNS_DANE_UNUSABLE, 0},
      {"secure NXDOMAIN", "_25._tcp.none.dane.test", DNS_DANE_NONE, 0},
      {"secure NODATA", "mx1.dane.test", DNS_DANE_NONE, 0},
      {"no AD", "_25._tcp.noad.dane.test", DNS_DANE_INSECURE, 0},
      {"SERVFAIL (bogus)", "_25._tcp.sf.dane.test", DNS_DANE_FAILED, 0},
  };
  struct fx *fx = *state;
  fx->ad = 1;
  for (int round = 0; round < 2; round++) { /* the second from the cache */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
      struct got_answer a = {0};
      dns_query(fx->dns, cases[i].name, DNS_TYPE_TLSA, on_answer, &a);
      fx_run(fx, &a.done, 1);
      if (a.dane != cases[i].want || a.num_usable != cases[i].want_usable) {
        fail_msg("%s (round %d): got %s with %zu usable, want %s with %zu",
                 cases[i].label, round, dns_dane_name(a.dane), a.num_usable,
                 dns_dane_name(cases[i].want), cases[i].want_usable);
      }
    }
  }
}

/* dns_tlsa_usable and dns_dane_verdict on answers made by hand. */
static void test_dane_verdict_table(void **state) {
  (void)state;
  static const uint8_t d32[32], d64[64], d3[3];
  struct usable_case {
    const char *label;
    uint8_t usage, selector, mtype;
    const uint8_t *data;
    size_t data_len;
    int want;
  };
  static const struct usable_case uc[] = {
      {"3 1 1", 3, 1, 1, d32, 32, 1},       {"2 0 1", 2, 0, 1, d32, 32, 1},
      {"3 0 2", 3, 0, 2, d64, 64, 1},       {"2 1 0", 2, 1, 0, d3, 3, 1},
      {"0 0 1", 0, 0, 1, d32, 32, 0},       {"1 1 1", 1, 1, 1, d32, 32, 0},
      {"4 1 1", 4, 1, 1, d32, 32, 0},       {"3 2 1", 3, 2, 1, d32, 32, 0},
      {"3 1 3", 3, 1, 3, d32, 32, 0},       {"3 1 1 short", 3, 1, 1, d3, 3, 0},
      {"3 1 2 short", 3, 1, 2, d32, 32, 0}, {"3 1 0 empty", 3, 1, 0, d3, 0, 0},
  };
  for (size_t i = 0; i < sizeof(uc) / sizeof(uc[0]); i++) {
    struct dns_rr rr = {.type = DNS_TYPE_TLSA};
    rr.rd.tlsa.usage = uc[i].usage;
    rr.rd.tlsa.selector = uc[i].selector;
    rr.rd.tlsa.mtype = uc[i].mtype;
    rr.rd.tlsa.data = uc[i].data;
    rr.rd.tlsa.data_len = uc[i].data_len;
    if (dns_tlsa_usable(&rr) != uc[i].want) {
      fail_msg("%s: usable %d, want %d", uc[i].label, dns_tlsa_usable(&rr),
               uc[i].want);
    }
  }
  struct dns_rr rrs[2] = {{.type = DNS_TYPE_TLSA}, {.type = DNS_TYPE_TLSA}};
  rrs[0].rd.tlsa.usage = 1; /* unusable */
  rrs[0].rd.tlsa.data = d32;
  rrs[0].rd.tlsa.data_len = 32;
  rrs[1] = rrs[0];
  rrs[1].rd.tlsa.usage = 3;
  rrs[1].rd.tlsa.selector = 1;
  rrs[1].rd.tlsa.mtype = 1;
  struct verdict_case {
    const char *label;
    struct dns_answer a;
    enum dns_dane want;
    size_t want_usable;
  } vc[] = {
      {"secure, one usable",
       {.status = DNS_OK, .secure = 1, .num_rrs = 2, .rrs = rrs},
       DNS_DANE_USABLE,
       1},
      {"secure, none usable",
       {.status = DNS_OK, .secure = 1, .num_rrs = 1, .rrs = rrs},
       DNS_DANE_UNUSABLE,
       0},
      {"insecure records",
       {.status = DNS_OK, .num_rrs = 2, .rrs = rrs},
       DNS_DANE_INSECURE,
       0},
      {"secure NXDOMAIN",
       {.status = DNS_NOT_FOUND, .secure = 1, .nxdomain = 1},
       DNS_DANE_NONE,
       0},
      {"insecure NODATA", {.status = DNS_NOT_FOUND}, DNS_DANE_INSECURE, 0},
      {"TEMPFAIL", {.status = DNS_TEMPFAIL}, DNS_DANE_FAILED, 0},
      {"PERMFAIL", {.status = DNS_PERMFAIL}, DNS_DANE_FAILED, 0},
  };
  for (size_t i = 0; i < sizeof(vc) / sizeof(vc[0]); i++) {
    size_t n = 99;
    enum dns_dane got = dns_dane_verdict(&vc[i].a, &n);
    if (got != vc[i].want || n != vc[i].want_usable) {
      fail_msg("%s: got %s with %zu usable, want %s with %zu", vc[i].label,
               dns_dane_name(got), n, dns_dane_name(vc[i].want),
               vc[i].want_usable);
    }
  }
}

/* At most DNS_ROUTE_MAX_HOSTS hosts, the most preferred. */
static void test_max_hosts(void **state) {
  struct fx *fx = *state;
  static struct zrr many[14];
  static char data[14][64];
  for (int i = 0; i < 12; i++) {
    snprintf(data[i], sizeof data[i], "%d h%02d.many.test", 100 - i, i);
    many[i] = (struct zrr){"many.test", DNS_TYPE_MX, 300, data[i]};
  }
  fx->zone = many;
  fx->num_zone = 12;
  struct got_route g = {0};
  dns_route_mx(fx->dns, "many.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.num_targets, DNS_ROUTE_MAX_HOSTS);
  assert_int_equal(g.t[0].pref, 89);
  assert_int_equal(g.status, DNS_NOT_FOUND); /* none has an address */
  assert_non_null(strstr(g.detail, "no address for any MX host"));
  assert_int_equal(fx->num_queries, 1 + 2 * DNS_ROUTE_MAX_HOSTS);
}

/* A callback may start and cancel lookups; one answered from the cache
 * runs in the same dispatch. */
struct reentry {
  struct fx *fx;
  struct got_answer second;
  uint64_t victim;
  int done;
};

static void on_reentry(void *arg, const struct dns_answer *a) {
  struct reentry *r = arg;
  r->done++;
  dns_cancel(r->fx->dns, r->victim);
  dns_query(r->fx->dns, "a.example.test", DNS_TYPE_A, on_answer, &r->second);
}

static void test_callback_reentry(void **state) {
  struct fx *fx = *state;
  struct reentry r = {.fx = fx};
  struct got_answer victim = {0};
  dns_query(fx->dns, "a.example.test", DNS_TYPE_A, on_reentry, &r);
  r.victim = dns_query(fx->dns, "silent.test", DNS_TYPE_A, on_answer, &victim);
  fx_run(fx, &r.done, 1);
  assert_int_equal(r.second.done, 1); /* from the cache, same dispatch */
  assert_int_equal(r.second.status, DNS_OK);
  assert_int_equal(victim.done, 0);
}

/* A truncated UDP answer is asked again over TCP; the TCP answer (its
 * length and body in one segment) is read whole both with a level- and
 * with an edge-triggered host. */
static void tcp_fallback(struct fx *fx) {
  struct got_answer a = {0};
  struct got_route r = {0};
  dns_query(fx->dns, "big.test", DNS_TYPE_TXT, on_answer, &a);
  dns_route_host(fx->dns, "big.test", on_route, &r);
  fx_run(fx, &a.done, 1);
  fx_run(fx, &r.done, 1);
  assert_int_equal(a.status, DNS_OK);
  assert_string_equal(a.text, "too big for UDP, says the server");
  assert_int_equal(r.status, DNS_OK);
  assert_string_equal(r.t[0].addr[0], "192.0.2.11");
  assert_int_equal(fx->num_tcp_queries, 3); /* TXT, AAAA, A */
}

static void test_tcp_fallback_level(void **state) {
  tcp_fallback(*state);
}

static void test_tcp_fallback_edge(void **state) {
  struct fx *fx = *state;
  fx->edge = 1; /* no socket is open yet: all get EPOLLET */
  tcp_fallback(fx);
  /* And the UDP path under edge triggering. */
  struct got_route g = {0};
  dns_route_mx(fx->dns, "example.test", on_route, &g);
  fx_run(fx, &g.done, 1);
  assert_int_equal(g.status, DNS_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_mx_route, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mx_shuffle, setup, teardown),
      cmocka_unit_test_setup_teardown(test_implicit_null_and_none, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_no_query_needed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_query_txt_tlsa, setup, teardown),
      cmocka_unit_test_setup_teardown(test_positive_cache, setup, teardown),
      cmocka_unit_test_setup_teardown(test_negative_cache, setup, teardown),
      cmocka_unit_test_setup_teardown(test_negative_no_soa, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tempfail_cache, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_coalesce, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_pending, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cname_requery_and_loop, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cache_bound, setup, teardown),
      cmocka_unit_test_setup_teardown(test_secure, setup, teardown),
      cmocka_unit_test_setup_teardown(test_secure_per_target, setup, teardown),
      cmocka_unit_test_setup_teardown(test_dane_verdict_answers, setup,
                                      teardown),
      cmocka_unit_test(test_dane_verdict_table),
      cmocka_unit_test_setup_teardown(test_max_hosts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_callback_reentry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tcp_fallback_level, setup, teardown),
      cmocka_unit_test_setup_teardown(test_tcp_fallback_edge, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
