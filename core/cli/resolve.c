/* core/cli/resolve.c — `postseal resolve`; see cli_resolve.h. The loop is
 * the smallest host policy/dns needs: poll() the sockets it asks for,
 * dns_process_fd the ready ones, dns_tick after, dns_dispatch before each
 * sleep. `resolve mta-sts` runs two lookups in that loop (the TXT record,
 * then the policy host's addresses), then fetches the policy with the
 * blocking crypto/https. */
#include "core/cli/cli_resolve.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "core/config.h"
#include "core/netaddr.h"
#include "crypto/https.h"
#include "policy/dns.h"
#include "policy/mta_sts.h"

#define RESOLVE_MAX_FDS (2 * DNS_MAX_SERVERS) /* a UDP and a TCP each */
#define RESOLVE_MAX_REPEAT 1000
#define RESOLVE_POLL_MAX_MS 1000 /* dns_tick at least once a second */
#define RESOLVE_ERR_LEN 256
#define RESOLVE_STS_CONNECT_TIMEOUT_MS 5000 /* as postseald's fetches */
#define RESOLVE_STS_FETCH_TIMEOUT_MS 20000
#define RESOLVE_STS_PATH "/.well-known/mta-sts.txt" /* RFC 8461 §3.2 */
#define RESOLVE_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

enum resolve_kind {
  RESOLVE_MX,
  RESOLVE_HOST,
  RESOLVE_TXT,
  RESOLVE_TLSA,
  RESOLVE_MTA_STS,
};

struct resolve_opts {
  enum resolve_kind kind;
  const char *name;
  const char *servers[DNS_MAX_SERVERS];
  size_t num_servers;
  unsigned timeout_ms;
  unsigned tries;
  unsigned repeat;
  int show_stats;
  int json;
  const char *config_path; /* -c: dns servers, timeout, tries, TLS */
  const char *ca_file;     /* mta-sts: --ca-file, else the config's */
  unsigned port;           /* mta-sts: --port, else the config's; 0 unset */
  struct config *cfg;      /* loaded from config_path */
};

/* What `resolve mta-sts` learns in the DNS loop. */
struct resolve_sts {
  enum dns_status txt_status;
  char txt_detail[MTA_STS_ERR_LEN + DNS_NAME_TEXT_MAX];
  int have_id;
  char id[MTA_STS_MAX_ID + 1];
  enum dns_status host_status;
  char host_detail[DNS_DETAIL_MAX];
  size_t num_addrs;
  struct sockaddr_storage addrs[DNS_ROUTE_MAX_ADDRS];
};

struct resolve_run {
  const struct resolve_opts *o;
  struct dns *dns;
  struct pollfd fds[RESOLVE_MAX_FDS];
  size_t num_fds;
  unsigned started, finished;
  int exit_code;
  struct resolve_sts sts;
};

static void resolve_usage(FILE *f) {
  fprintf(f, "usage: postseal resolve mx|host|txt|tlsa NAME [--server "
             "IP:PORT]... [--timeout MS]\n"
             "                        [--tries N] [--repeat N] [--json] "
             "[-c CONFIG]\n"
             "       postseal resolve mta-sts DOMAIN [--server IP:PORT]... "
             "[-c CONFIG]\n"
             "                        [--ca-file PEM] [--port N] [--json]\n");
}

static int64_t monotonic_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- options ---- */

static int parse_uint(const char *s, unsigned min, unsigned max,
                      unsigned *out) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-' || v < min ||
      v > max) {
    return -1;
  }
  *out = (unsigned)v;
  return 0;
}

static int parse_kind(const char *s, enum resolve_kind *out) {
  static const struct {
    const char *name;
    enum resolve_kind kind;
  } kinds[] = {{"mx", RESOLVE_MX},
               {"host", RESOLVE_HOST},
               {"txt", RESOLVE_TXT},
               {"tlsa", RESOLVE_TLSA},
               {"mta-sts", RESOLVE_MTA_STS}};
  for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
    if (strcmp(s, kinds[i].name) == 0) {
      *out = kinds[i].kind;
      return 0;
    }
  }
  return -1;
}

/* option_value takes the value of a "--opt VALUE" option. */
static const char *option_value(int argc, char **argv, int *i) {
  if (*i + 1 >= argc) {
    fprintf(stderr, "postseal resolve: %s needs a value\n", argv[*i]);
    return NULL;
  }
  return argv[++*i];
}

static int resolve_option(int argc, char **argv, int *i,
                          struct resolve_opts *o) {
  const char *a = argv[*i], *v;
  if (strcmp(a, "--json") == 0) {
    o->json = 1;
    return 0;
  }
  if ((v = option_value(argc, argv, i)) == NULL) {
    return -1;
  }
  if (strcmp(a, "--server") == 0) {
    if (o->num_servers == DNS_MAX_SERVERS) {
      fprintf(stderr, "postseal resolve: at most %d servers\n",
              DNS_MAX_SERVERS);
      return -1;
    }
    o->servers[o->num_servers++] = v;
    return 0;
  }
  if (strcmp(a, "--timeout") == 0 &&
      parse_uint(v, 1, 60000, &o->timeout_ms) == 0) {
    return 0;
  }
  if (strcmp(a, "--tries") == 0 && parse_uint(v, 1, 10, &o->tries) == 0) {
    return 0;
  }
  if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
    o->config_path = v;
    return 0;
  }
  if (strcmp(a, "--ca-file") == 0) {
    o->ca_file = v;
    return 0;
  }
  if (strcmp(a, "--port") == 0 && parse_uint(v, 1, 65535, &o->port) == 0) {
    return 0;
  }
  if (strcmp(a, "--repeat") == 0 &&
      parse_uint(v, 1, RESOLVE_MAX_REPEAT, &o->repeat) == 0) {
    o->show_stats = 1;
    return 0;
  }
  fprintf(stderr, "postseal resolve: bad option %s %s\n", a, v);
  return -1;
}

/* resolve_opts_check refuses options that do not go with the kind. */
static int resolve_opts_check(const struct resolve_opts *o) {
  int sts = o->kind == RESOLVE_MTA_STS;
  if (!sts && (o->ca_file != NULL || o->port != 0)) {
    fprintf(stderr, "postseal resolve: --ca-file and --port are for "
                    "mta-sts\n");
    return -1;
  }
  if (sts && o->repeat > 1) {
    fprintf(stderr, "postseal resolve: --repeat is not for mta-sts\n");
    return -1;
  }
  if (sts && !mta_sts_domain_valid(o->name)) {
    fprintf(stderr, "postseal resolve: %s is not a domain name\n", o->name);
    return -1;
  }
  return 0;
}

/* resolve_opts_config fills from -c CONFIG what the command line did not
 * give: the resolvers, the timeout and tries, and for mta-sts the CA
 * file and port. 0, or -1 (reason printed). */
static int resolve_opts_config(struct resolve_opts *o) {
  if (o->config_path == NULL) {
    return 0;
  }
  char err[RESOLVE_ERR_LEN] = "";
  o->cfg = config_load(o->config_path, err, sizeof err);
  if (o->cfg == NULL) {
    fprintf(stderr, "postseal resolve: %s\n", err[0] ? err : o->config_path);
    return -1;
  }
  const struct config *c = o->cfg;
  for (size_t i = 0;
       o->num_servers == 0 && i < c->num_dns_servers && i < DNS_MAX_SERVERS;
       i++) {
    o->servers[i] = c->dns_servers[i];
    o->num_servers = i + 1;
  }
  if (o->timeout_ms == 0) {
    o->timeout_ms = c->dns_timeout_ms;
  }
  if (o->tries == 0) {
    o->tries = c->dns_tries;
  }
  if (o->ca_file == NULL) {
    o->ca_file = c->tls_ca_file;
  }
  if (o->port == 0) {
    o->port = c->tls_mta_sts_port;
  }
  return 0;
}

static int resolve_opts_parse(int argc, char **argv, struct resolve_opts *o) {
  int num_pos = 0;
  *o = (struct resolve_opts){.repeat = 1};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) == 0 || strcmp(a, "-c") == 0) {
      if (resolve_option(argc, argv, &i, o) != 0) {
        return -1;
      }
    } else if (num_pos == 0 && parse_kind(a, &o->kind) == 0) {
      num_pos++;
    } else if (num_pos == 1) {
      o->name = a;
      num_pos++;
    } else {
      fprintf(stderr, "postseal resolve: unexpected argument '%s'\n", a);
      return -1;
    }
  }
  if (num_pos != 2) {
    fprintf(stderr, "postseal resolve: need a kind and a name\n");
    return -1;
  }
  return resolve_opts_check(o);
}

/* ---- output ---- */

static int exit_code_of(enum dns_status s) {
  switch (s) {
  case DNS_OK:
    return EX_OK;
  case DNS_TEMPFAIL:
    return EX_TEMPFAIL;
  default:
    return EX_NOUSER;
  }
}

/* json_str writes s[0..len) as a JSON string. */
static void json_str(const char *s, size_t len) {
  putchar('"');
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      printf("\\%c", c);
    } else if (c < 0x20 || c >= 0x7f) {
      printf("\\u%04x", c);
    } else {
      putchar(c);
    }
  }
  putchar('"');
}

/* text_str writes bytes as a quoted string, \DDD for the unprintable. */
static void text_str(const uint8_t *s, size_t len) {
  putchar('"');
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '"' || s[i] == '\\') {
      printf("\\%c", s[i]);
    } else if (s[i] < 0x20 || s[i] >= 0x7f) {
      printf("\\%03u", s[i]);
    } else {
      putchar(s[i]);
    }
  }
  putchar('"');
}

static void print_stats(const struct resolve_run *run) {
  struct dns_stats s;
  dns_get_stats(run->dns, &s);
  if (run->o->json) {
    printf(",\"stats\":{\"queries\":%" PRIu64 ",\"cache_hits\":%" PRIu64
           ",\"cache_misses\":%" PRIu64 ",\"coalesced\":%" PRIu64
           ",\"tempfails\":%" PRIu64 ",\"timeouts\":%" PRIu64 "}",
           s.queries, s.cache_hits, s.cache_misses, s.coalesced, s.tempfails,
           s.timeouts);
  } else {
    printf("stats queries=%" PRIu64 " cache_hits=%" PRIu64
           " cache_misses=%" PRIu64 " coalesced=%" PRIu64 " tempfails=%" PRIu64
           " timeouts=%" PRIu64 "\n",
           s.queries, s.cache_hits, s.cache_misses, s.coalesced, s.tempfails,
           s.timeouts);
  }
}

static void print_target(const struct resolve_run *run,
                         const struct dns_target *t, int first) {
  char addr[64];
  if (run->o->json) {
    printf("%s{\"pref\":%u,\"host\":", first ? "" : ",", t->pref);
    json_str(t->host, strlen(t->host));
    printf(",\"status\":\"%s\",\"addrs\":[", dns_status_name(t->status));
  } else {
    printf("%u %s", t->pref, t->host);
  }
  for (size_t k = 0; k < t->num_addrs; k++) {
    if (sockaddr_format((const struct sockaddr *)&t->addrs[k], addr,
                        sizeof addr) != 0) {
      snprintf(addr, sizeof addr, "?");
    }
    if (run->o->json) {
      printf("%s\"%s\"", k > 0 ? "," : "", addr);
    } else {
      printf(" %s", addr);
    }
  }
  if (run->o->json) {
    printf("]}");
  } else if (t->num_addrs == 0) {
    printf(" (%s)\n", dns_status_name(t->status));
  } else {
    printf("\n");
  }
}

static void print_route(const struct resolve_run *run,
                        const struct dns_route *r) {
  if (run->o->json) {
    printf("{\"status\":\"%s\",\"detail\":", dns_status_name(r->status));
    json_str(r->detail, strlen(r->detail));
    printf(",\"secure\":%s,\"targets\":[", r->secure ? "true" : "false");
  } else {
    printf("status %s\nsecure %s\n", dns_status_name(r->status),
           r->secure ? "yes" : "no");
    if (r->detail[0] != '\0') {
      printf("detail %s\n", r->detail);
    }
  }
  for (size_t i = 0; i < r->num_targets; i++) {
    print_target(run, &r->targets[i], i == 0);
  }
  if (run->o->json) {
    printf("]");
  }
}

static void print_rr(const struct resolve_run *run, const struct dns_rr *rr,
                     int first) {
  if (run->o->json && !first) {
    putchar(',');
  }
  if (rr->type == DNS_TYPE_TXT) {
    if (run->o->json) {
      json_str((const char *)rr->rd.txt.data, rr->rd.txt.data_len);
    } else {
      text_str(rr->rd.txt.data, rr->rd.txt.data_len);
    }
  } else if (rr->type == DNS_TYPE_TLSA) {
    printf(run->o->json ? "\"%u %u %u " : "%u %u %u ", rr->rd.tlsa.usage,
           rr->rd.tlsa.selector, rr->rd.tlsa.mtype);
    for (size_t i = 0; i < rr->rd.tlsa.data_len; i++) {
      printf("%02x", rr->rd.tlsa.data[i]);
    }
    if (run->o->json) {
      putchar('"');
    }
  }
  if (!run->o->json) {
    putchar('\n');
  }
}

static void print_answer(const struct resolve_run *run,
                         const struct dns_answer *a) {
  if (run->o->json) {
    printf("{\"status\":\"%s\",\"detail\":", dns_status_name(a->status));
    json_str(a->why ? a->why : "", a->why ? strlen(a->why) : 0);
    printf(",\"secure\":%s,\"ttl\":%u,\"owner\":", a->secure ? "true" : "false",
           a->ttl);
    json_str(a->owner, strlen(a->owner));
    printf(",\"rrs\":[");
  } else {
    printf("status %s\nsecure %s\nttl %u\n", dns_status_name(a->status),
           a->secure ? "yes" : "no", a->ttl);
    if (a->why != NULL) {
      printf("detail %s\n", a->why);
    }
    if (a->num_cnames > 0) {
      printf("owner %s\n", a->owner);
    }
  }
  for (size_t i = 0; i < a->num_rrs; i++) {
    print_rr(run, &a->rrs[i], i == 0);
  }
  if (run->o->json) {
    printf("]");
  }
}

/* ---- lookups ---- */

static void start_lookup(struct resolve_run *run);

/* lookup_finished counts one answer; the last one is printed. The lookups
 * after the first two start one at a time, from here: those are answered
 * from the cache. */
static int lookup_finished(struct resolve_run *run, enum dns_status s) {
  run->finished++;
  run->exit_code = exit_code_of(s);
  if (run->started < run->o->repeat && run->finished == run->started) {
    start_lookup(run);
  }
  return run->finished == run->o->repeat;
}

static void print_end(const struct resolve_run *run) {
  if (run->o->show_stats) {
    print_stats(run);
  }
  if (run->o->json) {
    printf("}\n");
  }
}

static void on_route(void *arg, const struct dns_route *r) {
  struct resolve_run *run = arg;
  if (lookup_finished(run, r->status)) {
    print_route(run, r);
    print_end(run);
  }
}

static void on_answer(void *arg, const struct dns_answer *a) {
  struct resolve_run *run = arg;
  if (lookup_finished(run, a->status)) {
    print_answer(run, a);
    print_end(run);
  }
}

/* ---- mta-sts: the DNS part ---- */

static void on_sts_host(void *arg, const struct dns_route *r) {
  struct resolve_run *run = arg;
  struct resolve_sts *st = &run->sts;
  st->host_status = r->status;
  snprintf(st->host_detail, sizeof st->host_detail, "%s", r->detail);
  for (size_t i = 0; i < r->num_targets; i++) {
    for (size_t k = 0;
         k < r->targets[i].num_addrs && st->num_addrs < DNS_ROUTE_MAX_ADDRS;
         k++) {
      st->addrs[st->num_addrs++] = r->targets[i].addrs[k];
    }
  }
  run->finished++;
}

/* on_sts_txt reads _mta-sts.DOMAIN (RFC 8461 §3.1); an id leads on to
 * the addresses of mta-sts.DOMAIN. */
static void on_sts_txt(void *arg, const struct dns_answer *a) {
  struct resolve_run *run = arg;
  struct resolve_sts *st = &run->sts;
  st->txt_status = a->status;
  if (a->status != DNS_OK) {
    snprintf(st->txt_detail, sizeof st->txt_detail, "_mta-sts.%s: %s",
             run->o->name, a->why ? a->why : dns_status_name(a->status));
    run->finished++;
    return;
  }
  char err[MTA_STS_ERR_LEN] = "";
  if (mta_sts_txt_find(st->id, err, sizeof err, a->rrs, a->num_rrs) !=
      MTA_STS_TXT_FOUND) {
    snprintf(st->txt_detail, sizeof st->txt_detail, "_mta-sts.%s: %s",
             run->o->name, err);
    run->finished++;
    return;
  }
  st->have_id = 1;
  char host[DNS_NAME_TEXT_MAX + 16];
  snprintf(host, sizeof host, "mta-sts.%s", run->o->name);
  if (dns_route_host(run->dns, host, on_sts_host, run) == 0) {
    fprintf(stderr, "postseal resolve: out of memory\n");
    exit(EX_SOFTWARE);
  }
}

static void start_lookup(struct resolve_run *run) {
  const struct resolve_opts *o = run->o;
  uint64_t h = 0;
  char sts_name[DNS_NAME_TEXT_MAX + 16];
  run->started++;
  switch (o->kind) {
  case RESOLVE_MX:
    h = dns_route_mx(run->dns, o->name, on_route, run);
    break;
  case RESOLVE_HOST:
    h = dns_route_host(run->dns, o->name, on_route, run);
    break;
  case RESOLVE_TXT:
    h = dns_query(run->dns, o->name, DNS_TYPE_TXT, on_answer, run);
    break;
  case RESOLVE_TLSA:
    h = dns_query(run->dns, o->name, DNS_TYPE_TLSA, on_answer, run);
    break;
  case RESOLVE_MTA_STS:
    snprintf(sts_name, sizeof sts_name, "_mta-sts.%s", o->name);
    h = dns_query(run->dns, sts_name, DNS_TYPE_TXT, on_sts_txt, run);
    break;
  }
  if (h == 0) {
    fprintf(stderr, "postseal resolve: out of memory\n");
    exit(EX_SOFTWARE);
  }
}

/* ---- mta-sts: the fetch and the output ---- */

/* The outcome of `resolve mta-sts`. */
struct sts_result {
  int exit_code;
  char error[HTTPS_ERR_LEN + 128]; /* "" on success */
  int have_policy;
  struct mta_sts_policy policy;
  char peer[64];
};

/* sts_fetch gets and parses the policy (RFC 8461 §3.3): PKIX against the
 * CA file for mta-sts.DOMAIN, no redirects, text/plain, 64 KiB. */
static void sts_fetch(const struct resolve_run *run, struct sts_result *res) {
  const struct resolve_opts *o = run->o;
  const char *ca = o->ca_file ? o->ca_file : RESOLVE_DEFAULT_CA_FILE;
  struct tls_client_config cc = {.ca_file = ca[0] ? ca : NULL};
  char err[HTTPS_ERR_LEN] = "", host[DNS_NAME_TEXT_MAX + 16];
  struct tls_ctx *tls = tls_ctx_new_client(&cc, err, sizeof err);
  if (tls == NULL) {
    snprintf(res->error, sizeof res->error, "TLS: %s", err);
    res->exit_code = EX_CONFIG;
    return;
  }
  snprintf(host, sizeof host, "mta-sts.%s", o->name);
  size_t hl = strlen(host);
  if (hl > 0 && host[hl - 1] == '.') {
    host[hl - 1] = '\0';
  }
  struct https_request req = {
      .tls = tls,
      .host = host,
      .port = (uint16_t)(o->port ? o->port : 443),
      .path = RESOLVE_STS_PATH,
      .addrs = run->sts.addrs,
      .num_addrs = run->sts.num_addrs,
      .connect_timeout_ms = RESOLVE_STS_CONNECT_TIMEOUT_MS,
      .timeout_ms = RESOLVE_STS_FETCH_TIMEOUT_MS,
      .max_body = MTA_STS_MAX_POLICY_LEN,
      .want_media_type = "text/plain",
  };
  struct https_response resp;
  res->exit_code = EX_UNAVAILABLE;
  if (https_get(&req, &resp, err, sizeof err) != 0) {
    snprintf(res->error, sizeof res->error, "policy fetch failed: %s", err);
  } else if (mta_sts_policy_parse(&res->policy, err, sizeof err, resp.body.data,
                                  resp.body.len) != 0) {
    snprintf(res->error, sizeof res->error, "invalid policy from %s: %s",
             resp.peer, err);
  } else {
    res->have_policy = 1;
    res->exit_code = EX_OK;
    snprintf(res->peer, sizeof res->peer, "%s", resp.peer);
  }
  https_response_cleanup(&resp);
  tls_ctx_free(tls);
}

/* sts_judge: what the DNS part left to do, and the exit status. */
static void sts_judge(const struct resolve_run *run, struct sts_result *res) {
  const struct resolve_sts *st = &run->sts;
  if (!st->have_id) {
    /* No usable record: no policy (RFC 8461 §3.1). */
    res->exit_code = st->txt_status == DNS_TEMPFAIL ? EX_TEMPFAIL : EX_NOUSER;
    snprintf(res->error, sizeof res->error, "no MTA-STS policy: %s",
             st->txt_detail);
    return;
  }
  if (st->num_addrs == 0) {
    res->exit_code =
        st->host_status == DNS_TEMPFAIL ? EX_TEMPFAIL : EX_UNAVAILABLE;
    snprintf(res->error, sizeof res->error,
             "policy fetch failed: mta-sts.%s: no address (%s)", run->o->name,
             st->host_detail[0] ? st->host_detail
                                : dns_status_name(st->host_status));
    return;
  }
  sts_fetch(run, res);
}

static void print_sts_text(const struct resolve_run *run,
                           const struct sts_result *res) {
  const struct resolve_sts *st = &run->sts;
  printf("domain %s\n", run->o->name);
  if (st->have_id) {
    printf("id %s\n", st->id);
  }
  if (!res->have_policy) {
    return;
  }
  printf("fetched_from %s\nversion STSv1\nmode %s\nmax_age %u\n", res->peer,
         mta_sts_mode_name(res->policy.mode), res->policy.max_age);
  for (size_t i = 0; i < res->policy.num_mx; i++) {
    printf("mx %s\n", mta_sts_policy_mx(&res->policy, i));
  }
}

static void print_sts_json(const struct resolve_run *run,
                           const struct sts_result *res) {
  const struct resolve_sts *st = &run->sts;
  printf("{\"domain\":");
  json_str(run->o->name, strlen(run->o->name));
  printf(",\"id\":");
  if (st->have_id) {
    json_str(st->id, strlen(st->id));
  } else {
    printf("null");
  }
  printf(",\"policy\":");
  if (res->have_policy) {
    printf("{\"version\":\"STSv1\",\"mode\":\"%s\",\"max_age\":%u,"
           "\"mx\":[",
           mta_sts_mode_name(res->policy.mode), res->policy.max_age);
    for (size_t i = 0; i < res->policy.num_mx; i++) {
      const char *mx = mta_sts_policy_mx(&res->policy, i);
      printf("%s", i > 0 ? "," : "");
      json_str(mx, strlen(mx));
    }
    printf("],\"fetched_from\":\"%s\"}", res->peer);
  } else {
    printf("null");
  }
  printf(",\"error\":");
  if (res->error[0] != '\0') {
    json_str(res->error, strlen(res->error));
  } else {
    printf("null");
  }
  printf("}\n");
}

/* sts_finish fetches and prints; the exit status. */
static int sts_finish(const struct resolve_run *run) {
  struct sts_result res = {.exit_code = EX_SOFTWARE};
  sts_judge(run, &res);
  if (run->o->json) {
    print_sts_json(run, &res);
  } else {
    print_sts_text(run, &res);
  }
  if (res.error[0] != '\0') {
    fprintf(stderr, "postseal resolve: mta-sts %s: %s\n", run->o->name,
            res.error);
  }
  return res.exit_code;
}

/* ---- the loop ---- */

/* resolve_watch keeps run->fds as policy/dns asks (dns_io.watch). */
static void resolve_watch(void *ctx, int fd, int want_read, int want_write) {
  struct resolve_run *run = ctx;
  size_t i = 0;
  while (i < run->num_fds && run->fds[i].fd != fd) {
    i++;
  }
  if (!want_read && !want_write) {
    if (i < run->num_fds) {
      run->fds[i] = run->fds[--run->num_fds];
    }
    return;
  }
  if (i == run->num_fds) {
    if (run->num_fds == RESOLVE_MAX_FDS) {
      return; /* cannot happen: see RESOLVE_MAX_FDS; c-ares times out */
    }
    run->num_fds++;
  }
  run->fds[i].fd = fd;
  run->fds[i].events =
      (short)((want_read ? POLLIN : 0) | (want_write ? POLLOUT : 0));
  run->fds[i].revents = 0;
}

/* resolve_poll waits once and hands ready sockets to policy/dns. */
static int resolve_poll(struct resolve_run *run) {
  struct pollfd ready[RESOLVE_MAX_FDS];
  int64_t t = dns_next_timeout_ms(run->dns, monotonic_ms());
  int timeout = t < 0 || t > RESOLVE_POLL_MAX_MS ? RESOLVE_POLL_MAX_MS : (int)t;
  int n = poll(run->fds, run->num_fds, timeout);
  if (n < 0 && errno != EINTR) {
    fprintf(stderr, "postseal resolve: poll: %s\n", strerror(errno));
    return -1;
  }
  /* dns_process_fd may change run->fds (watch): work from a copy. */
  size_t num_ready = 0;
  for (size_t i = 0; n > 0 && i < run->num_fds; i++) {
    if (run->fds[i].revents != 0) {
      ready[num_ready++] = run->fds[i];
    }
  }
  for (size_t i = 0; i < num_ready; i++) {
    short ev = ready[i].revents;
    dns_process_fd(run->dns, ready[i].fd,
                   (ev & (POLLIN | POLLERR | POLLHUP)) != 0,
                   (ev & (POLLOUT | POLLERR)) != 0);
  }
  dns_tick(run->dns, monotonic_ms());
  return 0;
}

/* resolve_deadline_ms bounds the whole run, beyond what c-ares bounds
 * itself: each query ends after timeout * (2^tries - 1) per server, and a
 * route is at most an MX query and then address queries in parallel. */
static int64_t resolve_deadline_ms(const struct resolve_opts *o) {
  int64_t timeout = o->timeout_ms ? o->timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
  unsigned tries = o->tries ? o->tries : DNS_DEFAULT_TRIES;
  size_t servers = o->num_servers ? o->num_servers : 3;
  int64_t per_query = timeout * ((1 << tries) - 1) * (int64_t)servers;
  return monotonic_ms() + (2 * per_query + 5000) * (int64_t)o->repeat;
}

static int resolve_run(const struct resolve_opts *o) {
  struct resolve_run run = {.o = o, .exit_code = EX_SOFTWARE};
  struct dns_config cfg = {.servers = o->servers,
                           .num_servers = o->num_servers,
                           .timeout_ms = o->timeout_ms,
                           .tries = o->tries};
  struct dns_io io = {.ctx = &run, .watch = resolve_watch};
  char err[RESOLVE_ERR_LEN] = "";
  run.dns = dns_new(&cfg, &io, err, sizeof err);
  if (run.dns == NULL) {
    fprintf(stderr, "postseal resolve: %s\n", err);
    return o->num_servers > 0 ? EX_USAGE : EX_SOFTWARE;
  }
  int64_t deadline = resolve_deadline_ms(o);
  dns_tick(run.dns, monotonic_ms());
  start_lookup(&run);
  if (o->repeat > 1) {
    start_lookup(&run); /* shares the first one's query */
  }
  for (;;) {
    dns_dispatch(run.dns);
    if (run.finished == o->repeat) {
      break;
    }
    if (monotonic_ms() > deadline || resolve_poll(&run) != 0) {
      fprintf(stderr, "postseal resolve: no answer in time\n");
      run.exit_code = EX_TEMPFAIL;
      break;
    }
  }
  dns_free(run.dns);
  if (o->kind == RESOLVE_MTA_STS && run.finished == o->repeat) {
    run.exit_code = sts_finish(&run);
  }
  fflush(stdout);
  return run.exit_code;
}

int cli_resolve(int argc, char **argv) {
  struct resolve_opts o;
  if (argc >= 2 &&
      (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
    resolve_usage(stdout);
    return EX_OK;
  }
  if (resolve_opts_parse(argc, argv, &o) != 0) {
    resolve_usage(stderr);
    return EX_USAGE;
  }
  if (resolve_opts_config(&o) != 0) {
    return EX_CONFIG;
  }
  int rc = resolve_run(&o);
  config_free(o.cfg);
  return rc;
}
