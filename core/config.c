/* core/config.c — defaults, the YAML file, POSTSEAL_* environment; see
 * config.h and docs/configuration.md.
 *
 * Every setting is one row of a table (YAML key, environment variable,
 * shape, setter, bounds). The file loader and the environment loader both
 * walk the tables and call the same setters, so a value is validated the
 * same way wherever it comes from; only the error prefix differs
 * ("FILE:LINE: key: ..." or "env POSTSEAL_X: ..."). */
#include "core/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <yaml.h>

/* Bounds, named once. RFC 5321 4.5.3.1.7: a server must accept messages
 * of at least 64K octets. The spool stores a message in one record of at
 * most 1 GiB (core/spool.h), so the message limit stays well below. */
#define CONFIG_MAX_THREADS 64
#define CONFIG_MIN_MESSAGE_SIZE ((uint64_t)64 << 10)
#define CONFIG_MAX_MESSAGE_SIZE ((uint64_t)512 << 20)
#define CONFIG_MIN_HEADER_SIZE ((uint64_t)1 << 10)
#define CONFIG_MAX_HEADER_SIZE ((uint64_t)64 << 20)
#define CONFIG_MAX_RECIPIENTS 100000
#define CONFIG_MAX_ERRORS 1000
#define CONFIG_MAX_SESSIONS 1000000
#define CONFIG_MAX_TIMEOUT 86400
#define CONFIG_MAX_SHUTDOWN 3600
#define CONFIG_MAX_PATH 4096
#define CONFIG_MAX_CONCURRENCY 1000
#define CONFIG_MAX_MSGS_PER_CONN 100000
#define CONFIG_MAX_RETRY (7 * 86400)
#define CONFIG_MAX_LIFETIME (90 * 86400)
#define CONFIG_MAX_DOMAIN 253
#define CONFIG_MAX_REPORT_INTERVAL (7 * 86400) /* tls.report_interval */
#define CONFIG_MAX_REPORT_DOMAINS 1000000
#define CONFIG_MAX_REPORT_DETAILS 10000
#define CONFIG_MSG_LEN 256
#define CONFIG_KEY_LEN 64

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define FIELD(f)                                                               \
  .off = offsetof(struct config, f), .width = sizeof(((struct config *)0)->f)

/* What the YAML node of a setting must be. */
enum shape {
  SHAPE_PLAIN,   /* an unquoted scalar: a number or a boolean */
  SHAPE_STRING,  /* any scalar except a null */
  SHAPE_LIST,    /* a sequence of strings */
  SHAPE_MAPPING, /* a nested table of settings */
};

struct setting;
/* A setter validates one value (a whole scalar, or one list entry) and
 * stores it. On failure it writes a message naming the value to msg. */
typedef int (*setter_fn)(struct config *c, const struct setting *s,
                         const char *v, char *msg, size_t msg_len);
typedef void (*clear_fn)(struct config *c, const struct setting *s);

struct setting {
  const char *name; /* YAML key */
  const char *env;  /* environment override, or NULL */
  enum shape shape;
  setter_fn set;             /* value, or one list entry */
  clear_fn clear;            /* lists: drop the defaults before the entries */
  size_t off;                /* field in struct config */
  size_t width;              /* its size, for integers */
  size_t num_off;            /* lists: the count field */
  uint64_t min, max;         /* integers: inclusive bounds */
  int suffix;                /* integers: k/M/G allowed */
  const struct setting *sub; /* SHAPE_MAPPING: the nested table */
  size_t num_sub;
};

static void *field(struct config *c, size_t off) {
  return (char *)c + off;
}

static int msgf(char *msg, size_t msg_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* msgf writes a setter's message; returns -1 so setters can end with it. */
static int msgf(char *msg, size_t msg_len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, msg_len, fmt, ap);
  va_end(ap);
  return -1;
}

/* replace_str swaps *dst for a copy of v. */
static int replace_str(char **dst, const char *v, size_t v_len, char *msg,
                       size_t msg_len) {
  char *copy = strndup(v, v_len);
  if (copy == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  free(*dst);
  *dst = copy;
  return 0;
}

/* parse_number reads decimal digits, and with `suffix` one of k, M, G
 * (binary multiples, either case). No sign, no spaces, no overflow. */
static int parse_number(const char *v, int suffix, uint64_t *out, char *msg,
                        size_t msg_len) {
  const char *want = suffix ? "a size (digits, optionally followed by k, M "
                              "or G)"
                            : "a non-negative integer";
  uint64_t n = 0;
  size_t i = 0;
  for (; isdigit((unsigned char)v[i]); i++) {
    unsigned d = (unsigned)(v[i] - '0');
    if (n > (UINT64_MAX - d) / 10) {
      return msgf(msg, msg_len, "\"%.40s\" is too large", v);
    }
    n = n * 10 + d;
  }
  if (i == 0 || (v[i] != '\0' && (!suffix || v[i + 1] != '\0'))) {
    return msgf(msg, msg_len, "\"%.40s\" is not %s", v, want);
  }
  unsigned shift = 0;
  switch (v[i]) {
  case '\0':
    break;
  case 'k':
  case 'K':
    shift = 10;
    break;
  case 'm':
  case 'M':
    shift = 20;
    break;
  case 'g':
  case 'G':
    shift = 30;
    break;
  default:
    return msgf(msg, msg_len, "\"%.40s\" is not %s", v, want);
  }
  if (n > (UINT64_MAX >> shift)) {
    return msgf(msg, msg_len, "\"%.40s\" is too large", v);
  }
  *out = n << shift;
  return 0;
}

static int set_uint(struct config *c, const struct setting *s, const char *v,
                    char *msg, size_t msg_len) {
  uint64_t n = 0;
  if (parse_number(v, s->suffix, &n, msg, msg_len) != 0) {
    return -1;
  }
  if (n < s->min || n > s->max) {
    return msgf(msg, msg_len,
                "%" PRIu64 " is out of range (%" PRIu64 "..%" PRIu64 ")", n,
                s->min, s->max);
  }
  if (s->width == sizeof(unsigned)) {
    *(unsigned *)field(c, s->off) = (unsigned)n;
  } else {
    *(size_t *)field(c, s->off) = (size_t)n;
  }
  return 0;
}

static int set_bool(struct config *c, const struct setting *s, const char *v,
                    char *msg, size_t msg_len) {
  int *out = field(c, s->off);
  if (strcasecmp(v, "true") == 0) {
    *out = 1;
  } else if (strcasecmp(v, "false") == 0) {
    *out = 0;
  } else {
    return msgf(msg, msg_len, "\"%.40s\" is not true or false", v);
  }
  return 0;
}

static int set_log_format(struct config *c, const struct setting *s,
                          const char *v, char *msg, size_t msg_len) {
  enum config_log_format *out = field(c, s->off);
  if (strcmp(v, "plain") == 0) {
    *out = CONFIG_LOG_PLAIN;
  } else if (strcmp(v, "json") == 0) {
    *out = CONFIG_LOG_JSON;
  } else {
    return msgf(msg, msg_len, "\"%.40s\" is not plain or json", v);
  }
  return 0;
}

/* set_hostname: the name we greet with (RFC 5321 4.1.1.1 wants an FQDN). */
static int set_hostname(struct config *c, const struct setting *s,
                        const char *v, char *msg, size_t msg_len) {
  if (!netaddr_hostname_valid(v)) {
    return msgf(msg, msg_len, "\"%.80s\" is not a valid host name", v);
  }
  size_t n = strlen(v);
  if (v[n - 1] == '.') {
    n--;
  }
  return replace_str(field(c, s->off), v, n, msg, msg_len);
}

static int set_path(struct config *c, const struct setting *s, const char *v,
                    char *msg, size_t msg_len) {
  size_t n = strlen(v);
  if (n == 0) {
    return msgf(msg, msg_len, "must not be empty");
  }
  if (n >= CONFIG_MAX_PATH) {
    return msgf(msg, msg_len, "longer than %d bytes", CONFIG_MAX_PATH - 1);
  }
  return replace_str(field(c, s->off), v, n, msg, msg_len);
}

/* set_path_or_empty: a path, or "" to switch the feature off. */
static int set_path_or_empty(struct config *c, const struct setting *s,
                             const char *v, char *msg, size_t msg_len) {
  size_t n = strlen(v);
  if (n >= CONFIG_MAX_PATH) {
    return msgf(msg, msg_len, "longer than %d bytes", CONFIG_MAX_PATH - 1);
  }
  return replace_str(field(c, s->off), v, n, msg, msg_len);
}

static int set_relayhost(struct config *c, const struct setting *s,
                         const char *v, char *msg, size_t msg_len) {
  char host[256];
  uint16_t port;
  int no_mx;
  if (v[0] != '\0' &&
      relayhost_parse(v, host, sizeof(host), &port, &no_mx) != 0) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not [host]:port, [host], host:port or host", v);
  }
  return replace_str(field(c, s->off), v, strlen(v), msg, msg_len);
}

static int add_transport(struct config *c, const struct setting *s,
                         const char *v, char *msg, size_t msg_len) {
  (void)s;
  if (c->num_transports >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (c->transports == NULL) {
    c->transports = calloc(CONFIG_MAX_LIST, sizeof(*c->transports));
    if (c->transports == NULL) {
      return msgf(msg, msg_len, "out of memory");
    }
  }
  if (route_entry_parse(v, &c->transports[c->num_transports], msg, msg_len) !=
      0) {
    return -1;
  }
  c->num_transports++;
  return 0;
}

static void clear_transports(struct config *c, const struct setting *s) {
  (void)s;
  c->num_transports = 0;
}

static int set_local_transport(struct config *c, const struct setting *s,
                               const char *v, char *msg, size_t msg_len) {
  struct route r;
  if (route_parse(v, &r, msg, msg_len) != 0) {
    return -1;
  }
  if (replace_str(field(c, s->off), v, strlen(v), msg, msg_len) != 0) {
    return -1;
  }
  c->local_transport = r;
  return 0;
}

static int add_dns_server(struct config *c, const struct setting *s,
                          const char *v, char *msg, size_t msg_len) {
  (void)s;
  char host[256];
  uint16_t port;
  unsigned char addr[16];
  if (c->num_dns_servers >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (hostport_parse(v, host, sizeof(host), &port) != 0 ||
      (inet_pton(AF_INET, host, addr) != 1 &&
       inet_pton(AF_INET6, host, addr) != 1)) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not ip:port or [ipv6]:port (a name server "
                "is an address, not a name)",
                v);
  }
  c->dns_servers[c->num_dns_servers] = strdup(v);
  if (c->dns_servers[c->num_dns_servers] == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  c->num_dns_servers++;
  return 0;
}

static void clear_dns_servers(struct config *c, const struct setting *s) {
  (void)s;
  for (size_t i = 0; i < c->num_dns_servers; i++) {
    free(c->dns_servers[i]);
    c->dns_servers[i] = NULL;
  }
  c->num_dns_servers = 0;
}

static const char *const tls_level_names[] = {"none", "may", "encrypt",
                                              "verify", "dane"};

const char *config_tls_level_name(enum config_tls_level level) {
  return (unsigned)level < ARRAY_LEN(tls_level_names) ? tls_level_names[level]
                                                      : "?";
}

/* tls_level_parse: "none", "may", ... Returns 0, or -1. */
static int tls_level_parse(const char *v, enum config_tls_level *out) {
  for (size_t i = 0; i < ARRAY_LEN(tls_level_names); i++) {
    if (strcmp(v, tls_level_names[i]) == 0) {
      *out = (enum config_tls_level)i;
      return 0;
    }
  }
  return -1;
}

static int set_tls_level(struct config *c, const struct setting *s,
                         const char *v, char *msg, size_t msg_len) {
  if (tls_level_parse(v, field(c, s->off)) != 0) {
    return msgf(msg, msg_len,
                "\"%.40s\" is not none, may, encrypt, verify or dane", v);
  }
  return 0;
}

static int set_tls_version(struct config *c, const struct setting *s,
                           const char *v, char *msg, size_t msg_len) {
  if (strcmp(v, "1.2") != 0 && strcmp(v, "1.3") != 0) {
    return msgf(msg, msg_len, "\"%.40s\" is not 1.2 or 1.3", v);
  }
  return replace_str(field(c, s->off), v, strlen(v), msg, msg_len);
}

/* add_tls_policy: "DOMAIN LEVEL", DOMAIN a domain, ".domain" or "*". */
static int add_tls_policy(struct config *c, const struct setting *s,
                          const char *v, char *msg, size_t msg_len) {
  (void)s;
  if (c->num_tls_policies >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  const char *sp = strchr(v, ' ');
  struct config_tls_policy *p = &c->tls_policies[c->num_tls_policies];
  size_t n = sp ? (size_t)(sp - v) : 0;
  while (sp != NULL && *sp == ' ') {
    sp++;
  }
  if (sp == NULL || n == 0 || n >= sizeof(p->domain) ||
      tls_level_parse(sp, &p->level) != 0) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not \"DOMAIN LEVEL\" (LEVEL none, may, "
                "encrypt, verify or dane)",
                v);
  }
  memcpy(p->domain, v, n);
  p->domain[n] = '\0';
  const char *d = p->domain[0] == '.' ? p->domain + 1 : p->domain;
  if (strcmp(p->domain, "*") != 0 && !netaddr_hostname_valid(d)) {
    return msgf(msg, msg_len, "\"%.80s\": \"%s\" is not a domain", v,
                p->domain);
  }
  for (char *q = p->domain; *q; q++) {
    *q = (char)tolower((unsigned char)*q);
  }
  c->num_tls_policies++;
  return 0;
}

static void clear_tls_policies(struct config *c, const struct setting *s) {
  (void)s;
  c->num_tls_policies = 0;
}

static int set_listen(struct config *c, const struct setting *s, const char *v,
                      char *msg, size_t msg_len) {
  struct config_listen *l = field(c, s->off);
  struct config_listen next;
  memset(&next, 0, sizeof(next));
  size_t n = strlen(v);
  if (n >= sizeof(next.text)) {
    return msgf(msg, msg_len, "longer than %zu bytes", sizeof(next.text) - 1);
  }
  memcpy(next.text, v, n + 1);
  if (n > 0) {
    if (hostport_parse(v, next.host, sizeof(next.host), &next.port) != 0) {
      return msgf(msg, msg_len,
                  "\"%.80s\" is not host:port, [v6]:port, :port or \"\"", v);
    }
    next.enabled = 1;
  }
  *l = next;
  return 0;
}

static int add_cidr(struct config *c, const struct setting *s, const char *v,
                    char *msg, size_t msg_len) {
  if (c->num_mynetworks >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (cidr_parse(v, &c->mynetworks[c->num_mynetworks]) != 0) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not a network (a.b.c.d/n or x::y/n, with no "
                "host bits set below the prefix)",
                v);
  }
  c->num_mynetworks++;
  return 0;
}

static void clear_cidrs(struct config *c, const struct setting *s) {
  c->num_mynetworks = 0;
}

/* literal_valid: RFC 5321 4.1.3 address literal "[a.b.c.d]" or
 * "[IPv6:x::y]" (the tag case-insensitive). */
static int literal_valid(const char *v, size_t n) {
  char inner[64];
  if (n < 3 || v[n - 1] != ']' || n - 2 >= sizeof(inner)) {
    return 0;
  }
  memcpy(inner, v + 1, n - 2);
  inner[n - 2] = '\0';
  uint8_t addr[16];
  if (strncasecmp(inner, "ipv6:", 5) == 0) {
    return inet_pton(AF_INET6, inner + 5, addr) == 1;
  }
  return inet_pton(AF_INET, inner, addr) == 1;
}

/* domain_normalize copies v lower-cased, without a trailing dot, into
 * out; the result is a host name or an address literal. */
static int domain_normalize(const char *v, char *out, size_t out_len, char *msg,
                            size_t msg_len) {
  size_t n = strlen(v);
  if (n > 1 && v[0] != '[' && v[n - 1] == '.') {
    n--;
  }
  if (n == 0 || n > CONFIG_MAX_DOMAIN || n >= out_len) {
    return msgf(msg, msg_len, "\"%.80s\" is not a domain", v);
  }
  for (size_t i = 0; i < n; i++) {
    out[i] = (char)tolower((unsigned char)v[i]);
  }
  out[n] = '\0';
  int ok = out[0] == '[' ? literal_valid(out, n) : netaddr_hostname_valid(out);
  if (!ok) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not a domain name or address literal", v);
  }
  return 0;
}

static int add_domain(struct config *c, const struct setting *s, const char *v,
                      char *msg, size_t msg_len) {
  char **items = field(c, s->off);
  size_t *num = field(c, s->num_off);
  char name[CONFIG_MAX_DOMAIN + 1];
  if (*num >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (domain_normalize(v, name, sizeof(name), msg, msg_len) != 0) {
    return -1;
  }
  items[*num] = strdup(name);
  if (items[*num] == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  (*num)++;
  return 0;
}

static void clear_domains(struct config *c, const struct setting *s) {
  char **items = field(c, s->off);
  size_t *num = field(c, s->num_off);
  for (size_t i = 0; i < *num; i++) {
    free(items[i]);
    items[i] = NULL;
  }
  *num = 0;
}

int config_parse_time(const char *v, int64_t *out) {
  size_t n = strlen(v);
  if (n > 0 && n <= 12 && strspn(v, "0123456789") == n) {
    *out = (int64_t)strtoll(v, NULL, 10);
    return 0;
  }
  struct tm tm;
  memset(&tm, 0, sizeof(tm));
  const char *end = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
  if (end == NULL || (strcmp(end, "Z") != 0 && strcmp(end, "+00:00") != 0)) {
    return -1;
  }
  time_t t = timegm(&tm);
  if (t == (time_t)-1 || t < 0) {
    return -1;
  }
  *out = (int64_t)t;
  return 0;
}

/* dkim_selector_valid: RFC 6376 §3.1 selector = sub-domain *("." sub-domain),
 * labels of letters, digits and inner hyphens. */
static int dkim_selector_valid(const char *s) {
  size_t label = 0;
  for (const char *p = s;; p++) {
    if (*p == '.' || *p == '\0') {
      if (label == 0 || label > 63 || p[-1] == '-') {
        return 0;
      }
      if (*p == '\0') {
        return 1;
      }
      label = 0;
    } else if (isalnum((unsigned char)*p) || (*p == '-' && label > 0)) {
      label++;
    } else {
      return 0;
    }
  }
}

/* split_words splits v at blanks into at most max words of
 * CONFIG_MAX_PATH bytes. Returns the count, or max + 1 when there are
 * more words or one is too long (so callers' range checks refuse it). */
static size_t split_words(const char *v, char (*words)[CONFIG_MAX_PATH],
                          size_t max) {
  size_t nw = 0;
  const char *p = v;
  while (*p != '\0') {
    while (*p == ' ' || *p == '\t') {
      p++;
    }
    size_t len = strcspn(p, " \t");
    if (len == 0) {
      break;
    }
    if (nw == max || len >= CONFIG_MAX_PATH) {
      return max + 1;
    }
    memcpy(words[nw], p, len);
    words[nw++][len] = '\0';
    p += len;
  }
  return nw;
}

/* add_dkim_key: "DOMAIN SELECTOR KEY_FILE [NOT_BEFORE]". The key itself is
 * loaded by the daemon (runtime_attach), which reports a bad file. */
static int add_dkim_key(struct config *c, const struct setting *s,
                        const char *v, char *msg, size_t msg_len) {
  (void)s;
  if (c->num_dkim_keys >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (c->dkim_keys == NULL) {
    c->dkim_keys = calloc(CONFIG_MAX_LIST, sizeof(*c->dkim_keys));
    if (c->dkim_keys == NULL) {
      return msgf(msg, msg_len, "out of memory");
    }
  }
  char words[5][CONFIG_MAX_PATH];
  size_t nw = split_words(v, words, 5);
  if (nw < 3 || nw > 4) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not \"DOMAIN SELECTOR KEY_FILE [NOT_BEFORE]\"",
                v);
  }
  struct config_dkim_key *k = &c->dkim_keys[c->num_dkim_keys];
  memset(k, 0, sizeof(*k));
  if (domain_normalize(words[0], k->domain, sizeof(k->domain), msg, msg_len) !=
      0) {
    return -1;
  }
  if (strlen(words[1]) >= sizeof(k->selector) ||
      !dkim_selector_valid(words[1])) {
    return msgf(msg, msg_len, "\"%.80s\": \"%.80s\" is not a DKIM selector", v,
                words[1]);
  }
  memcpy(k->selector, words[1], strlen(words[1]) + 1); /* length checked */
  for (char *q = k->selector; *q; q++) {
    *q = (char)tolower((unsigned char)*q);
  }
  if (strlen(words[2]) >= sizeof(k->key_file)) {
    return msgf(msg, msg_len, "key file path too long");
  }
  memcpy(k->key_file, words[2], strlen(words[2]) + 1); /* length checked */
  if (nw == 4 && config_parse_time(words[3], &k->not_before) != 0) {
    return msgf(msg, msg_len,
                "\"%.80s\": \"%.40s\" is not a time like "
                "2026-12-01T00:00:00Z",
                v, words[3]);
  }
  for (size_t i = 0; i < c->num_dkim_keys; i++) {
    if (strcmp(c->dkim_keys[i].domain, k->domain) == 0 &&
        strcmp(c->dkim_keys[i].selector, k->selector) == 0) {
      return msgf(msg, msg_len, "selector %s of %s is listed twice",
                  k->selector, k->domain);
    }
  }
  c->num_dkim_keys++;
  return 0;
}

static void clear_dkim_keys(struct config *c, const struct setting *s) {
  (void)s;
  c->num_dkim_keys = 0;
}

/* add_header_name: an RFC 5322 field name (printable ASCII but ":"),
 * stored lower case; a repeat is refused. */
static int add_header_name(struct config *c, const struct setting *s,
                           const char *v, char *msg, size_t msg_len) {
  char **items = field(c, s->off);
  size_t *num = field(c, s->num_off);
  size_t n = strlen(v);
  if (*num >= CONFIG_MAX_DKIM_HEADERS) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_DKIM_HEADERS);
  }
  if (n == 0 || n > 100) {
    return msgf(msg, msg_len, "\"%.80s\" is not a header field name", v);
  }
  for (size_t i = 0; i < n; i++) {
    if (v[i] <= 0x20 || v[i] >= 0x7f || v[i] == ':') {
      return msgf(msg, msg_len, "\"%.80s\" is not a header field name", v);
    }
  }
  for (size_t i = 0; i < *num; i++) {
    if (strcasecmp(items[i], v) == 0) {
      return msgf(msg, msg_len, "\"%.80s\" is listed twice", v);
    }
  }
  items[*num] = strdup(v);
  if (items[*num] == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  for (char *q = items[*num]; *q; q++) {
    *q = (char)tolower((unsigned char)*q);
  }
  (*num)++;
  if (s->num_off == offsetof(struct config, num_dkim_oversign)) {
    c->dkim_oversign_set = 1;
  }
  return 0;
}

static void clear_header_names(struct config *c, const struct setting *s) {
  char **items = field(c, s->off);
  size_t *num = field(c, s->num_off);
  for (size_t i = 0; i < *num; i++) {
    free(items[i]);
    items[i] = NULL;
  }
  *num = 0;
  if (s->num_off == offsetof(struct config, num_dkim_oversign)) {
    c->dkim_oversign_set = 1; /* "oversign: []" means none */
  }
}

/* set_dkim_canon: c= as in RFC 6376: "relaxed/relaxed", "simple", ... */
static int set_dkim_canon(struct config *c, const struct setting *s,
                          const char *v, char *msg, size_t msg_len) {
  (void)s;
  const char *slash = strchr(v, '/');
  size_t hl = slash ? (size_t)(slash - v) : strlen(v);
  const char *b = slash ? slash + 1 : "simple";
  int h_rel, b_rel;
  if (hl == 7 && strncmp(v, "relaxed", 7) == 0) {
    h_rel = 1;
  } else if (hl == 6 && strncmp(v, "simple", 6) == 0) {
    h_rel = 0;
  } else {
    h_rel = -1;
  }
  b_rel = strcmp(b, "relaxed") == 0 ? 1 : strcmp(b, "simple") == 0 ? 0 : -1;
  if (h_rel < 0 || b_rel < 0) {
    return msgf(msg, msg_len,
                "\"%.40s\" is not HEADER/BODY with each simple or relaxed", v);
  }
  c->dkim_hdr_relaxed = h_rel;
  c->dkim_body_relaxed = b_rel;
  return 0;
}

static int set_domain_or_empty(struct config *c, const struct setting *s,
                               const char *v, char *msg, size_t msg_len) {
  char name[256] = "";
  if (v[0] != '\0' &&
      domain_normalize(v, name, sizeof(name), msg, msg_len) != 0) {
    return -1;
  }
  return replace_str(field(c, s->off), name, strlen(name), msg, msg_len);
}

static const struct setting listen_settings[] = {
    {.name = "smtp",
     .env = "POSTSEAL_SMTP_LISTEN",
     .shape = SHAPE_STRING,
     .set = set_listen,
     FIELD(smtp)},
    {.name = "submission",
     .env = "POSTSEAL_SUBMISSION_LISTEN",
     .shape = SHAPE_STRING,
     .set = set_listen,
     FIELD(submission)},
    {.name = "metrics",
     .env = "POSTSEAL_METRICS_LISTEN",
     .shape = SHAPE_STRING,
     .set = set_listen,
     FIELD(metrics)},
    {.name = "submissions",
     .env = "POSTSEAL_SUBMISSIONS_LISTEN",
     .shape = SHAPE_STRING,
     .set = set_listen,
     FIELD(submissions)},
};

static const struct setting tls_settings[] = {
    {.name = "cert_file",
     .env = "POSTSEAL_TLS_CERT_FILE",
     .shape = SHAPE_STRING,
     .set = set_path_or_empty,
     FIELD(tls_cert_file)},
    {.name = "key_file",
     .env = "POSTSEAL_TLS_KEY_FILE",
     .shape = SHAPE_STRING,
     .set = set_path_or_empty,
     FIELD(tls_key_file)},
    {.name = "min_version",
     .shape = SHAPE_STRING,
     .set = set_tls_version,
     FIELD(tls_min_version)},
    {.name = "ca_file",
     .env = "POSTSEAL_TLS_CA_FILE",
     .shape = SHAPE_STRING,
     .set = set_path_or_empty,
     FIELD(tls_ca_file)},
    {.name = "outbound",
     .env = "POSTSEAL_TLS_OUTBOUND",
     .shape = SHAPE_STRING,
     .set = set_tls_level,
     FIELD(tls_outbound)},
    {.name = "policies",
     .env = "POSTSEAL_TLS_POLICIES",
     .shape = SHAPE_LIST,
     .set = add_tls_policy,
     .clear = clear_tls_policies},
    {.name = "smtp_starttls",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(smtp_starttls)},
    {.name = "mta_sts",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(tls_mta_sts)},
    {.name = "mta_sts_port",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(tls_mta_sts_port),
     .min = 1,
     .max = 65535},
    {.name = "reports",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(tls_reports)},
    {.name = "report_interval",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(tls_report_interval),
     .min = 1,
     .max = CONFIG_MAX_REPORT_INTERVAL},
    {.name = "report_max_domains",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(tls_report_max_domains),
     .min = 1,
     .max = CONFIG_MAX_REPORT_DOMAINS},
    {.name = "report_max_failure_details",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(tls_report_max_failure_details),
     .min = 1,
     .max = CONFIG_MAX_REPORT_DETAILS},
};

static const struct setting auth_settings[] = {
    {.name = "passwd_file",
     .env = "POSTSEAL_AUTH_PASSWD_FILE",
     .shape = SHAPE_STRING,
     .set = set_path_or_empty,
     FIELD(auth_passwd_file)},
    {.name = "max_failures",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(auth_max_failures),
     .min = 1,
     .max = 32}, /* AUTH_LIMITER_MAX_FAILURES: the limiter keeps 32 */
    {.name = "failure_window",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(auth_failure_window),
     .min = 1,
     .max = 86400},
    {.name = "sender_login_match",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(auth_sender_login_match)},
};

static const struct setting submission_settings[] = {
    {.name = "require_auth",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(submission_require_auth)},
    {.name = "require_tls",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(submission_require_tls)},
};

static const struct setting dkim_settings[] = {
    {.name = "keys",
     .env = "POSTSEAL_DKIM_KEYS",
     .shape = SHAPE_LIST,
     .set = add_dkim_key,
     .clear = clear_dkim_keys},
    {.name = "sign", .shape = SHAPE_PLAIN, .set = set_bool, FIELD(dkim_sign)},
    {.name = "default_domain",
     .shape = SHAPE_STRING,
     .set = set_domain_or_empty,
     FIELD(dkim_default_domain)},
    {.name = "canonicalization", .shape = SHAPE_STRING, .set = set_dkim_canon},
    {.name = "headers",
     .shape = SHAPE_LIST,
     .set = add_header_name,
     .clear = clear_header_names,
     FIELD(dkim_headers),
     .num_off = offsetof(struct config, num_dkim_headers)},
    {.name = "oversign",
     .shape = SHAPE_LIST,
     .set = add_header_name,
     .clear = clear_header_names,
     FIELD(dkim_oversign),
     .num_off = offsetof(struct config, num_dkim_oversign)},
    {.name = "signature_ttl",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(dkim_signature_ttl),
     .min = 0,
     .max = 366 * 86400},
    {.name = "timestamp",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(dkim_timestamp)},
    {.name = "verify",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(dkim_verify)},
    {.name = "verify_max_signatures",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(dkim_verify_max_signatures),
     .min = 1,
     .max = 16}, /* DKIM_MAX_VERIFY */
};

/* smime_who_normalize: an address (local@domain, the domain checked and
 * both lower-cased) or a domain. */
static int smime_who_normalize(const char *v, char *out, size_t out_len,
                               char *msg, size_t msg_len) {
  const char *at = strrchr(v, '@');
  if (at == NULL) {
    return domain_normalize(v, out, out_len, msg, msg_len);
  }
  size_t local = (size_t)(at - v);
  char dom[256];
  if (local == 0 || local > 64 ||
      domain_normalize(at + 1, dom, sizeof(dom), msg, msg_len) != 0 ||
      local + 1 + strlen(dom) >= out_len) {
    return msgf(msg, msg_len, "\"%.80s\" is not an address or a domain", v);
  }
  for (size_t i = 0; i < local; i++) {
    if (v[i] <= 0x20 || v[i] >= 0x7f || v[i] == '<' || v[i] == '>') {
      return msgf(msg, msg_len, "\"%.80s\" is not an address or a domain", v);
    }
    out[i] = (char)tolower((unsigned char)v[i]);
  }
  out[local] = '@';
  memcpy(out + local + 1, dom, strlen(dom) + 1);
  return 0;
}

/* add_smime_signer: "WHO KEY_FILE CERT_FILE". The files are loaded by
 * the daemon (runtime_attach), which reports a bad one. */
static int add_smime_signer(struct config *c, const struct setting *s,
                            const char *v, char *msg, size_t msg_len) {
  (void)s;
  if (c->num_smime_signers >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (c->smime_signers == NULL) {
    c->smime_signers = calloc(CONFIG_MAX_LIST, sizeof(*c->smime_signers));
    if (c->smime_signers == NULL) {
      return msgf(msg, msg_len, "out of memory");
    }
  }
  char words[4][CONFIG_MAX_PATH];
  size_t nw = split_words(v, words, 3);
  struct config_smime_signer *e = &c->smime_signers[c->num_smime_signers];
  if (nw != 3 || strlen(words[1]) >= sizeof(e->key_file) ||
      strlen(words[2]) >= sizeof(e->cert_file)) {
    return msgf(msg, msg_len, "\"%.80s\" is not \"WHO KEY_FILE CERT_FILE\"", v);
  }
  memset(e, 0, sizeof(*e));
  if (smime_who_normalize(words[0], e->who, sizeof(e->who), msg, msg_len) !=
      0) {
    return -1;
  }
  for (size_t i = 0; i < c->num_smime_signers; i++) {
    if (strcmp(c->smime_signers[i].who, e->who) == 0) {
      return msgf(msg, msg_len, "%s is listed twice", e->who);
    }
  }
  memcpy(e->key_file, words[1], strlen(words[1]) + 1);  /* checked */
  memcpy(e->cert_file, words[2], strlen(words[2]) + 1); /* checked */
  c->num_smime_signers++;
  return 0;
}

static void clear_smime_signers(struct config *c, const struct setting *s) {
  (void)s;
  c->num_smime_signers = 0;
}

/* smime_policy_parse: "none", "if-possible" or "required". */
static int smime_policy_parse(const char *v, enum config_smime_policy *out) {
  static const char *const names[] = {"none", "if-possible", "required"};
  for (unsigned i = 0; i < ARRAY_LEN(names); i++) {
    if (strcmp(v, names[i]) == 0) {
      *out = (enum config_smime_policy)i;
      return 0;
    }
  }
  return -1;
}

static int set_smime_encrypt(struct config *c, const struct setting *s,
                             const char *v, char *msg, size_t msg_len) {
  (void)s;
  if (smime_policy_parse(v, &c->smime_encrypt) != 0) {
    return msgf(msg, msg_len, "\"%.40s\" is not none, if-possible or required",
                v);
  }
  return 0;
}

/* add_smime_policy: "WHO POLICY". */
static int add_smime_policy(struct config *c, const struct setting *s,
                            const char *v, char *msg, size_t msg_len) {
  (void)s;
  if (c->num_smime_policies >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (c->smime_policies == NULL) {
    c->smime_policies = calloc(CONFIG_MAX_LIST, sizeof(*c->smime_policies));
    if (c->smime_policies == NULL) {
      return msgf(msg, msg_len, "out of memory");
    }
  }
  char words[3][CONFIG_MAX_PATH];
  struct config_smime_policy_entry *e =
      &c->smime_policies[c->num_smime_policies];
  if (split_words(v, words, 2) != 2 ||
      smime_policy_parse(words[1], &e->policy) != 0) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not \"WHO POLICY\" (POLICY none, if-possible "
                "or required)",
                v);
  }
  if (smime_who_normalize(words[0], e->who, sizeof(e->who), msg, msg_len) !=
      0) {
    return -1;
  }
  c->num_smime_policies++;
  return 0;
}

static void clear_smime_policies(struct config *c, const struct setting *s) {
  (void)s;
  c->num_smime_policies = 0;
}

static int set_smime_cipher(struct config *c, const struct setting *s,
                            const char *v, char *msg, size_t msg_len) {
  (void)s;
  static const char *const names[] = {"aes-256-gcm", "aes-128-gcm",
                                      "aes-256-cbc", "aes-128-cbc"};
  for (unsigned i = 0; i < ARRAY_LEN(names); i++) {
    if (strcmp(v, names[i]) == 0) {
      c->smime_cipher = i;
      return 0;
    }
  }
  return msgf(msg, msg_len,
              "\"%.40s\" is not aes-256-gcm, aes-128-gcm, aes-256-cbc or "
              "aes-128-cbc",
              v);
}

static int set_smime_digest(struct config *c, const struct setting *s,
                            const char *v, char *msg, size_t msg_len) {
  (void)s;
  static const char *const names[] = {"sha256", "sha384", "sha512"};
  for (unsigned i = 0; i < ARRAY_LEN(names); i++) {
    if (strcmp(v, names[i]) == 0) {
      c->smime_digest = i;
      return 0;
    }
  }
  return msgf(msg, msg_len, "\"%.40s\" is not sha256, sha384 or sha512", v);
}

static const struct setting smime_settings[] = {
    {.name = "sign",
     .env = "POSTSEAL_SMIME_SIGN",
     .shape = SHAPE_LIST,
     .set = add_smime_signer,
     .clear = clear_smime_signers},
    {.name = "certs",
     .shape = SHAPE_STRING,
     .set = set_path_or_empty,
     FIELD(smime_certs)},
    {.name = "trust",
     .shape = SHAPE_STRING,
     .set = set_path_or_empty,
     FIELD(smime_trust)},
    {.name = "encrypt", .shape = SHAPE_STRING, .set = set_smime_encrypt},
    {.name = "encrypt_policies",
     .shape = SHAPE_LIST,
     .set = add_smime_policy,
     .clear = clear_smime_policies},
    {.name = "cipher", .shape = SHAPE_STRING, .set = set_smime_cipher},
    {.name = "digest", .shape = SHAPE_STRING, .set = set_smime_digest},
    {.name = "opaque",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(smime_opaque)},
    {.name = "encrypt_to_sender",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(smime_encrypt_to_sender)},
    {.name = "verify",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(smime_verify)},
};

/* add_dmarc_override: "DOMAIN POLICY". */
static int add_dmarc_override(struct config *c, const struct setting *s,
                              const char *v, char *msg, size_t msg_len) {
  (void)s;
  if (c->num_dmarc_overrides >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  const char *sp = strchr(v, ' ');
  char name[256];
  size_t n = sp ? (size_t)(sp - v) : 0;
  while (sp != NULL && *sp == ' ') {
    sp++;
  }
  if (sp == NULL || n == 0 || n >= sizeof(name) ||
      (strcmp(sp, "none") != 0 && strcmp(sp, "quarantine") != 0 &&
       strcmp(sp, "reject") != 0)) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not \"DOMAIN POLICY\" (POLICY none, "
                "quarantine or reject)",
                v);
  }
  memcpy(name, v, n);
  name[n] = '\0';
  char norm[256];
  if (domain_normalize(name, norm, sizeof(norm), msg, msg_len) != 0) {
    return -1;
  }
  char *e = malloc(strlen(norm) + 1 + strlen(sp) + 1);
  if (e == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  sprintf(e, "%s %s", norm, sp);
  c->dmarc_overrides[c->num_dmarc_overrides++] = e;
  return 0;
}

static void clear_dmarc_overrides(struct config *c, const struct setting *s) {
  (void)s;
  for (size_t i = 0; i < c->num_dmarc_overrides; i++) {
    free(c->dmarc_overrides[i]);
    c->dmarc_overrides[i] = NULL;
  }
  c->num_dmarc_overrides = 0;
}

/* add_check_listener: "smtp", "submission" or "submissions". */
static int add_check_listener(struct config *c, const struct setting *s,
                              const char *v, char *msg, size_t msg_len) {
  (void)s;
  static const char *const names[] = {"smtp", "submission", "submissions"};
  for (unsigned i = 0; i < ARRAY_LEN(names); i++) {
    if (strcmp(v, names[i]) == 0) {
      c->inbound_checks |= 1u << i;
      return 0;
    }
  }
  return msgf(msg, msg_len, "\"%.40s\" is not smtp, submission or submissions",
              v);
}

static void clear_check_listeners(struct config *c, const struct setting *s) {
  (void)s;
  c->inbound_checks = 0;
}

static const struct setting spf_settings[] = {
    {.name = "enabled",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(spf_enabled)},
    {.name = "timeout",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(spf_timeout),
     .min = 1,
     .max = 300},
};

/* set_report_org: the reporter's name in DMARC reports (a host name, as
 * the §7.2.1.1 file name wants a domain), or "" for the hostname. */
static int set_report_org(struct config *c, const struct setting *s,
                          const char *v, char *msg, size_t msg_len) {
  if (v[0] != '\0' && !netaddr_hostname_valid(v)) {
    return msgf(msg, msg_len, "\"%.80s\" is not a valid host name", v);
  }
  size_t n = strlen(v);
  if (n > 0 && v[n - 1] == '.') {
    n--;
  }
  return replace_str(field(c, s->off), v, n, msg, msg_len);
}

/* set_report_email: "local@domain" (dot-atom local part, RFC 5322
 * §3.4.1), or "" for postmaster@<hostname>. It goes into a From field
 * and the report, so nothing that needs quoting. */
static int set_report_email(struct config *c, const struct setting *s,
                            const char *v, char *msg, size_t msg_len) {
  const char *at = strrchr(v, '@');
  if (v[0] == '\0') {
    return replace_str(field(c, s->off), v, 0, msg, msg_len);
  }
  int ok = at != NULL && at != v && at - v <= 64 && at[-1] != '.' &&
           v[0] != '.' && netaddr_hostname_valid(at + 1);
  for (const char *p = v; ok && p < at; p++) {
    ok = (isalnum((unsigned char)*p) ||
          strchr("!#$%&'*+-/=?^_`{|}~.", *p) != NULL) &&
         !(p[0] == '.' && p[1] == '.');
  }
  if (!ok) {
    return msgf(msg, msg_len, "\"%.80s\" is not a plain mail address", v);
  }
  return replace_str(field(c, s->off), v, strlen(v), msg, msg_len);
}

static const struct setting dmarc_settings[] = {
    {.name = "enabled",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(dmarc_enabled)},
    {.name = "enforce",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(dmarc_enforce)},
    {.name = "psl_file",
     .shape = SHAPE_STRING,
     .set = set_path,
     FIELD(dmarc_psl_file)},
    {.name = "overrides",
     .shape = SHAPE_LIST,
     .set = add_dmarc_override,
     .clear = clear_dmarc_overrides},
    {.name = "reports",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(dmarc_reports)},
    {.name = "report_interval",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(dmarc_report_interval),
     .min = 1,
     .max = CONFIG_MAX_REPORT_INTERVAL},
    {.name = "report_max_domains",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(dmarc_report_max_domains),
     .min = 1,
     .max = CONFIG_MAX_REPORT_DOMAINS},
    {.name = "report_org_name",
     .shape = SHAPE_STRING,
     .set = set_report_org,
     FIELD(dmarc_report_org_name)},
    {.name = "report_email",
     .shape = SHAPE_STRING,
     .set = set_report_email,
     FIELD(dmarc_report_email)},
};

static const struct setting limit_settings[] = {
    {.name = "message_size",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(message_size_limit),
     .min = CONFIG_MIN_MESSAGE_SIZE,
     .max = CONFIG_MAX_MESSAGE_SIZE,
     .suffix = 1},
    /* RFC 5321 4.5.3.1.8 asks for 100; fewer is the operator's choice. */
    {.name = "recipients",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(recipient_limit),
     .min = 1,
     .max = CONFIG_MAX_RECIPIENTS},
    {.name = "header_size",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(header_size_limit),
     .min = CONFIG_MIN_HEADER_SIZE,
     .max = CONFIG_MAX_HEADER_SIZE,
     .suffix = 1},
    {.name = "errors",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(error_limit),
     .min = 1,
     .max = CONFIG_MAX_ERRORS},
    {.name = "sessions_per_thread",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(max_sessions),
     .min = 1,
     .max = CONFIG_MAX_SESSIONS},
};

static const struct setting timeout_settings[] = {
    {.name = "command",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(timeout_command),
     .min = 1,
     .max = CONFIG_MAX_TIMEOUT},
    {.name = "data",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(timeout_data),
     .min = 1,
     .max = CONFIG_MAX_TIMEOUT},
    {.name = "shutdown",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(timeout_shutdown),
     .min = 0,
     .max = CONFIG_MAX_SHUTDOWN},
};

static const struct setting delivery_settings[] = {
    {.name = "concurrency",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_concurrency),
     .min = 1,
     .max = CONFIG_MAX_CONCURRENCY},
    {.name = "messages_per_connection",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_messages_per_connection),
     .min = 1,
     .max = CONFIG_MAX_MSGS_PER_CONN},
    {.name = "retry_initial",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_retry_initial),
     .min = 1,
     .max = CONFIG_MAX_RETRY},
    {.name = "retry_max",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_retry_max),
     .min = 1,
     .max = CONFIG_MAX_RETRY},
    {.name = "max_lifetime",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_max_lifetime),
     .min = 1,
     .max = CONFIG_MAX_LIFETIME},
    {.name = "connect_timeout",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_connect_timeout),
     .min = 1,
     .max = CONFIG_MAX_TIMEOUT},
    {.name = "destination_concurrency",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_dest_concurrency),
     .min = 1,
     .max = CONFIG_MAX_CONCURRENCY},
    {.name = "destination_rate",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_dest_rate),
     .min = 0,
     .max = 1000000},
    {.name = "delay_warning",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(delivery_delay_warning),
     .min = 0,
     .max = CONFIG_MAX_LIFETIME},
};

/* ---- throttle (core/daemon/throttle.c) ---- */

static int set_throttle_redis(struct config *c, const struct setting *s,
                              const char *v, char *msg, size_t msg_len) {
  char host[256];
  uint16_t port;
  if (v[0] != '\0' &&
      (hostport_parse(v, host, sizeof(host), &port) != 0 || port == 0)) {
    return msgf(msg, msg_len, "\"%.80s\" is not host:port or [ipv6]:port", v);
  }
  return replace_str(field(c, s->off), v, strlen(v), msg, msg_len);
}

/* throttle_period_parse reads a period: digits with an optional unit, ms,
 * s (the default), m or h; 1 ms .. 1 day. */
static int throttle_period_parse(const char *v, unsigned *out_ms) {
  uint64_t n = 0;
  size_t i = 0;
  for (; isdigit((unsigned char)v[i]) && i < 12; i++) {
    n = n * 10 + (uint64_t)(v[i] - '0');
  }
  const char *unit = v + i;
  uint64_t mult = strcmp(unit, "ms") == 0                           ? 1
                  : strcmp(unit, "") == 0 || strcmp(unit, "s") == 0 ? 1000
                  : strcmp(unit, "m") == 0                          ? 60000
                  : strcmp(unit, "h") == 0                          ? 3600000
                                                                    : 0;
  if (i == 0 || isdigit((unsigned char)v[i]) || mult == 0 || n == 0 ||
      n * mult > 86400000) {
    return -1;
  }
  *out_ms = (unsigned)(n * mult);
  return 0;
}

/* add_throttle_rate: "DESTINATION RATE/PERIOD". */
static int add_throttle_rate(struct config *c, const struct setting *s,
                             const char *v, char *msg, size_t msg_len) {
  (void)s;
  char words[3][CONFIG_MAX_PATH];
  if (c->num_throttle_rates >= CONFIG_MAX_LIST) {
    return msgf(msg, msg_len, "more than %d entries", CONFIG_MAX_LIST);
  }
  if (c->throttle_rates == NULL) {
    c->throttle_rates = calloc(CONFIG_MAX_LIST, sizeof(*c->throttle_rates));
    if (c->throttle_rates == NULL) {
      return msgf(msg, msg_len, "out of memory");
    }
  }
  struct config_throttle_rate *r = &c->throttle_rates[c->num_throttle_rates];
  char *slash = NULL;
  uint64_t rate = 0;
  char scratch[CONFIG_MSG_LEN];
  if (split_words(v, words, 3) != 2 || strlen(words[0]) >= sizeof(r->domain) ||
      (slash = strchr(words[1], '/')) == NULL ||
      throttle_period_parse(slash + 1, &r->period_ms) != 0 ||
      (*slash = '\0',
       parse_number(words[1], 0, &rate, scratch, sizeof(scratch)) != 0) ||
      rate == 0 || rate > CONFIG_MAX_THROTTLE_RATE) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not \"DESTINATION RATE/PERIOD\" (RATE 1..%d, "
                "PERIOD like 60, 60s, 500ms, 1m, 1h)",
                v, CONFIG_MAX_THROTTLE_RATE);
  }
  r->rate = (unsigned)rate;
  const char *d = words[0][0] == '.' ? words[0] + 1 : words[0];
  if (strcmp(words[0], "*") != 0 && !netaddr_hostname_valid(d)) {
    return msgf(msg, msg_len, "\"%.80s\": \"%s\" is not a domain", v, words[0]);
  }
  for (size_t i = 0; words[0][i] != '\0'; i++) {
    r->domain[i] = (char)tolower((unsigned char)words[0][i]);
  }
  r->domain[strlen(words[0])] = '\0';
  for (size_t i = 0; i < c->num_throttle_rates; i++) {
    if (strcmp(c->throttle_rates[i].domain, r->domain) == 0) {
      return msgf(msg, msg_len, "\"%s\" is listed twice", r->domain);
    }
  }
  c->num_throttle_rates++;
  return 0;
}

static void clear_throttle_rates(struct config *c, const struct setting *s) {
  (void)s;
  c->num_throttle_rates = 0;
}

/* set_throttle_prefix: printable, no blanks, at most 64 bytes (it starts
 * every Redis key). */
static int set_throttle_prefix(struct config *c, const struct setting *s,
                               const char *v, char *msg, size_t msg_len) {
  size_t n = strlen(v);
  for (size_t i = 0; i < n; i++) {
    if (v[i] <= ' ' || v[i] > '~') {
      n = 65; /* refused below */
      break;
    }
  }
  if (n > 64) {
    return msgf(msg, msg_len,
                "\"%.80s\" is not up to 64 printable characters without "
                "blanks",
                v);
  }
  return replace_str(field(c, s->off), v, n, msg, msg_len);
}

static const struct setting throttle_settings[] = {
    {.name = "redis",
     .env = "POSTSEAL_THROTTLE_REDIS",
     .shape = SHAPE_STRING,
     .set = set_throttle_redis,
     FIELD(throttle_redis)},
    {.name = "rates",
     .shape = SHAPE_LIST,
     .set = add_throttle_rate,
     .clear = clear_throttle_rates},
    {.name = "timeout_ms",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(throttle_timeout_ms),
     .min = 10,
     .max = 60000},
    {.name = "key_prefix",
     .shape = SHAPE_STRING,
     .set = set_throttle_prefix,
     FIELD(throttle_key_prefix)},
    {.name = "replicas",
     .env = "POSTSEAL_THROTTLE_REPLICAS",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(throttle_replicas),
     .min = 1,
     .max = 10000},
};

static const struct setting dns_settings[] = {
    {.name = "servers",
     .env = "POSTSEAL_DNS_SERVERS",
     .shape = SHAPE_LIST,
     .set = add_dns_server,
     .clear = clear_dns_servers},
    {.name = "timeout_ms",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(dns_timeout_ms),
     .min = 100,
     .max = 60000},
    {.name = "tries",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(dns_tries),
     .min = 1,
     .max = 10},
};

static const struct setting top_settings[] = {
    {.name = "hostname",
     .env = "POSTSEAL_HOSTNAME",
     .shape = SHAPE_STRING,
     .set = set_hostname,
     FIELD(hostname)},
    {.name = "threads",
     .env = "POSTSEAL_THREADS",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(threads),
     .min = 1,
     .max = CONFIG_MAX_THREADS},
    {.name = "listen",
     .shape = SHAPE_MAPPING,
     .sub = listen_settings,
     .num_sub = ARRAY_LEN(listen_settings)},
    {.name = "spool_dir",
     .env = "POSTSEAL_SPOOL_DIR",
     .shape = SHAPE_STRING,
     .set = set_path,
     FIELD(spool_dir)},
    {.name = "spool_segment_size",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(spool_segment_size),
     .min = 64 * 1024,
     .max = (size_t)1 << 30,
     .suffix = 1},
    {.name = "spool_prezero",
     .shape = SHAPE_PLAIN,
     .set = set_uint,
     FIELD(spool_prezero),
     .min = 0,
     .max = (size_t)64 << 20,
     .suffix = 1},
    {.name = "relayhost",
     .env = "POSTSEAL_RELAYHOST",
     .shape = SHAPE_STRING,
     .set = set_relayhost,
     FIELD(relayhost)},
    {.name = "log_format",
     .env = "POSTSEAL_LOG_FORMAT",
     .shape = SHAPE_STRING,
     .set = set_log_format,
     FIELD(log_format)},
    {.name = "mynetworks",
     .env = "POSTSEAL_MYNETWORKS",
     .shape = SHAPE_LIST,
     .set = add_cidr,
     .clear = clear_cidrs},
    {.name = "local_domains",
     .env = "POSTSEAL_LOCAL_DOMAINS",
     .shape = SHAPE_LIST,
     .set = add_domain,
     .clear = clear_domains,
     FIELD(local_domains),
     .num_off = offsetof(struct config, num_local_domains)},
    {.name = "relay_domains",
     .env = "POSTSEAL_RELAY_DOMAINS",
     .shape = SHAPE_LIST,
     .set = add_domain,
     .clear = clear_domains,
     FIELD(relay_domains),
     .num_off = offsetof(struct config, num_relay_domains)},
    {.name = "open_relay",
     .shape = SHAPE_PLAIN,
     .set = set_bool,
     FIELD(open_relay)},
    {.name = "limits",
     .shape = SHAPE_MAPPING,
     .sub = limit_settings,
     .num_sub = ARRAY_LEN(limit_settings)},
    {.name = "timeouts",
     .shape = SHAPE_MAPPING,
     .sub = timeout_settings,
     .num_sub = ARRAY_LEN(timeout_settings)},
    {.name = "delivery",
     .shape = SHAPE_MAPPING,
     .sub = delivery_settings,
     .num_sub = ARRAY_LEN(delivery_settings)},
    {.name = "transports",
     .env = "POSTSEAL_TRANSPORTS",
     .shape = SHAPE_LIST,
     .set = add_transport,
     .clear = clear_transports},
    {.name = "local_transport",
     .env = "POSTSEAL_LOCAL_TRANSPORT",
     .shape = SHAPE_STRING,
     .set = set_local_transport,
     FIELD(local_transport_text)},
    {.name = "dns",
     .shape = SHAPE_MAPPING,
     .sub = dns_settings,
     .num_sub = ARRAY_LEN(dns_settings)},
    {.name = "control_socket",
     .env = "POSTSEAL_CONTROL_SOCKET",
     .shape = SHAPE_STRING,
     .set = set_path_or_empty,
     FIELD(control_socket)},
    {.name = "tls",
     .shape = SHAPE_MAPPING,
     .sub = tls_settings,
     .num_sub = ARRAY_LEN(tls_settings)},
    {.name = "auth",
     .shape = SHAPE_MAPPING,
     .sub = auth_settings,
     .num_sub = ARRAY_LEN(auth_settings)},
    {.name = "submission",
     .shape = SHAPE_MAPPING,
     .sub = submission_settings,
     .num_sub = ARRAY_LEN(submission_settings)},
    {.name = "dkim",
     .shape = SHAPE_MAPPING,
     .sub = dkim_settings,
     .num_sub = ARRAY_LEN(dkim_settings)},
    {.name = "inbound_checks",
     .shape = SHAPE_LIST,
     .set = add_check_listener,
     .clear = clear_check_listeners},
    {.name = "spf",
     .shape = SHAPE_MAPPING,
     .sub = spf_settings,
     .num_sub = ARRAY_LEN(spf_settings)},
    {.name = "dmarc",
     .shape = SHAPE_MAPPING,
     .sub = dmarc_settings,
     .num_sub = ARRAY_LEN(dmarc_settings)},
    {.name = "smime",
     .shape = SHAPE_MAPPING,
     .sub = smime_settings,
     .num_sub = ARRAY_LEN(smime_settings)},
    {.name = "throttle",
     .shape = SHAPE_MAPPING,
     .sub = throttle_settings,
     .num_sub = ARRAY_LEN(throttle_settings)},
};

/* load_mapping tracks the keys seen in a 32-bit mask. */
_Static_assert(
    ARRAY_LEN(top_settings) <= 32 && ARRAY_LEN(limit_settings) <= 32 &&
        ARRAY_LEN(timeout_settings) <= 32 &&
        ARRAY_LEN(delivery_settings) <= 32 && ARRAY_LEN(dns_settings) <= 32 &&
        ARRAY_LEN(listen_settings) <= 32 && ARRAY_LEN(tls_settings) <= 32 &&
        ARRAY_LEN(auth_settings) <= 32 &&
        ARRAY_LEN(submission_settings) <= 32 &&
        ARRAY_LEN(dkim_settings) <= 32 && ARRAY_LEN(spf_settings) <= 32 &&
        ARRAY_LEN(dmarc_settings) <= 32 && ARRAY_LEN(smime_settings) <= 32 &&
        ARRAY_LEN(throttle_settings) <= 32,
    "setting tables must fit the seen mask");

/* default_hostname: gethostname(), or "localhost" if it is unusable. */
static const char *default_hostname(char *buf, size_t buf_len) {
  if (gethostname(buf, buf_len) != 0 || buf[buf_len - 1] != '\0' ||
      !netaddr_hostname_valid(buf)) {
    return "localhost";
  }
  return buf;
}

static unsigned default_threads(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) {
    return 1;
  }
  return n > CONFIG_MAX_THREADS ? CONFIG_MAX_THREADS : (unsigned)n;
}

/* config_defaults fills c with the built-in single-machine setup. */
static int config_defaults(struct config *c, char *msg, size_t msg_len) {
  char host[256] = {0};
  c->threads = default_threads();
  c->log_format = CONFIG_LOG_PLAIN;
  c->open_relay = 0;
  c->message_size_limit = (size_t)10 << 20;
  c->recipient_limit = 100;
  c->header_size_limit = (size_t)1 << 20;
  c->error_limit = 20;
  c->max_sessions = 10000;
  c->timeout_command = 300;
  c->timeout_data = 180;
  c->timeout_shutdown = 10;
  c->delivery_concurrency = 10;
  c->delivery_messages_per_connection = 100;
  c->delivery_retry_initial = 60;
  c->delivery_retry_max = 3600;
  c->delivery_max_lifetime = 5 * 86400;
  c->delivery_connect_timeout = 30;
  c->spool_segment_size = (size_t)64 << 20; /* SPOOL_SEGMENT_TARGET_SIZE */
  c->spool_prezero = (size_t)1 << 20;
  c->delivery_dest_concurrency = 10;
  c->delivery_dest_rate = 0;
  c->delivery_delay_warning = 4 * 3600;
  c->dns_timeout_ms = 2000;
  c->dns_tries = 3;
  c->tls_outbound = CONFIG_TLS_MAY;
  c->auth_max_failures = 5;
  c->auth_failure_window = 600;
  c->auth_sender_login_match = 1;
  c->submission_require_auth = 1;
  c->submission_require_tls = 1;
  c->smtp_starttls = 1;
  c->tls_mta_sts = 1;
  c->tls_mta_sts_port = 443;
  c->tls_reports = 1;
  c->tls_report_interval = 86400;
  c->tls_report_max_domains = 10000;
  c->tls_report_max_failure_details = 100;
  c->dkim_sign = 1;
  c->dkim_hdr_relaxed = 1;
  c->dkim_body_relaxed = 1;
  c->dkim_timestamp = 1;
  c->dkim_verify = 1;
  c->dkim_verify_max_signatures = 5;
  c->dkim_default_domain = strdup("");
  c->inbound_checks = 1u; /* smtp */
  c->spf_enabled = 1;
  c->spf_timeout = 20;
  c->dmarc_enabled = 1;
  c->dmarc_enforce = 1;
  c->dmarc_psl_file = strdup("/usr/share/publicsuffix/public_suffix_list.dat");
  c->dmarc_reports = 1;
  c->dmarc_report_interval = 86400;
  c->dmarc_report_max_domains = 10000;
  c->dmarc_report_org_name = strdup("");
  c->dmarc_report_email = strdup("");
  c->smime_certs = strdup("");
  c->smime_trust = strdup("");
  c->smime_encrypt_to_sender = 1;
  c->smime_verify = 1;
  c->tls_cert_file = strdup("");
  c->tls_key_file = strdup("");
  c->tls_min_version = strdup("1.2");
  c->tls_ca_file = strdup("/etc/ssl/certs/ca-certificates.crt");
  c->auth_passwd_file = strdup("");
  c->throttle_redis = strdup("");
  c->throttle_key_prefix = strdup("postseal:");
  c->throttle_timeout_ms = 200;
  c->throttle_replicas = 1;
  if (c->throttle_redis == NULL || c->throttle_key_prefix == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  if (c->tls_cert_file == NULL || c->tls_key_file == NULL ||
      c->tls_min_version == NULL || c->tls_ca_file == NULL ||
      c->auth_passwd_file == NULL || c->dkim_default_domain == NULL ||
      c->dmarc_psl_file == NULL || c->dmarc_report_org_name == NULL ||
      c->dmarc_report_email == NULL || c->smime_certs == NULL ||
      c->smime_trust == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  for (size_t i = 0; i < ARRAY_LEN(top_settings); i++) {
    if (top_settings[i].set == set_local_transport &&
        set_local_transport(c, &top_settings[i], "maildir:mail/%d/%u", msg,
                            msg_len) != 0) {
      return -1;
    }
  }
  c->hostname = strdup(default_hostname(host, sizeof(host)));
  c->spool_dir = strdup("spool");
  c->relayhost = strdup("");
  c->local_domains[0] = strdup("localhost");
  if (c->hostname == NULL || c->spool_dir == NULL || c->relayhost == NULL ||
      c->local_domains[0] == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  c->num_local_domains = 1;
  if (set_listen(c, &listen_settings[0], "127.0.0.1:2525", msg, msg_len) ||
      set_listen(c, &listen_settings[1], "127.0.0.1:2587", msg, msg_len) ||
      set_listen(c, &listen_settings[2], "127.0.0.1:9425", msg, msg_len) ||
      add_cidr(c, NULL, "127.0.0.0/8", msg, msg_len) ||
      add_cidr(c, NULL, "::1/128", msg, msg_len)) {
    return -1;
  }
  return 0;
}

/* ---- the YAML file ---- */

struct loader {
  const char *path;
  yaml_document_t *doc;
  struct config *c;
  char key[CONFIG_KEY_LEN]; /* dotted name of the key being read */
  char *err;
  size_t err_len;
};

static int file_err(struct loader *ld, const yaml_node_t *node, const char *fmt,
                    ...) __attribute__((format(printf, 3, 4)));

/* file_err writes "FILE:LINE: key: message" (line 1-based). Returns -1. */
static int file_err(struct loader *ld, const yaml_node_t *node, const char *fmt,
                    ...) {
  char msg[CONFIG_MSG_LEN];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  snprintf(ld->err, ld->err_len, "%s:%zu: %s%s%s", ld->path,
           node->start_mark.line + 1, ld->key, ld->key[0] ? ": " : "", msg);
  return -1;
}

static const char *node_kind(const yaml_node_t *n) {
  switch (n->type) {
  case YAML_SCALAR_NODE:
    return "a scalar";
  case YAML_SEQUENCE_NODE:
    return "a list";
  case YAML_MAPPING_NODE:
    return "a mapping";
  default:
    return "nothing";
  }
}

/* scalar_is_null: YAML 1.1 spells null as "", "~" or null, unquoted. */
static int scalar_is_null(const yaml_node_t *n) {
  const char *v = (const char *)n->data.scalar.value;
  return n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
         (v[0] == '\0' || strcmp(v, "~") == 0 || strcmp(v, "null") == 0 ||
          strcmp(v, "Null") == 0 || strcmp(v, "NULL") == 0);
}

/* node_scalar gives the text of a scalar node of the wanted shape. */
static int node_scalar(struct loader *ld, const yaml_node_t *n,
                       enum shape shape, const char **out) {
  const char *want =
      shape == SHAPE_PLAIN ? "a number or true/false" : "a string";
  if (n->type != YAML_SCALAR_NODE) {
    return file_err(ld, n, "expected %s, got %s", want, node_kind(n));
  }
  if (scalar_is_null(n)) {
    return file_err(ld, n, "no value (write \"\" for an empty string)");
  }
  if (shape == SHAPE_PLAIN && n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) {
    return file_err(ld, n, "expected %s, got a quoted string", want);
  }
  const char *v = (const char *)n->data.scalar.value;
  if (strlen(v) != n->data.scalar.length) {
    return file_err(ld, n, "contains a NUL byte");
  }
  *out = v;
  return 0;
}

static int load_mapping(struct loader *ld, yaml_node_t *map,
                        const struct setting *table, size_t num);

/* load_list replaces a list setting with the sequence's entries. */
static int load_list(struct loader *ld, const struct setting *s,
                     yaml_node_t *seq) {
  if (seq->type != YAML_SEQUENCE_NODE) {
    return file_err(ld, seq, "expected a list, got %s", node_kind(seq));
  }
  s->clear(ld->c, s);
  for (yaml_node_item_t *it = seq->data.sequence.items.start;
       it < seq->data.sequence.items.top; it++) {
    yaml_node_t *item = yaml_document_get_node(ld->doc, *it);
    const char *v;
    char msg[CONFIG_MSG_LEN];
    if (node_scalar(ld, item, SHAPE_STRING, &v) != 0) {
      return -1;
    }
    if (s->set(ld->c, s, v, msg, sizeof(msg)) != 0) {
      return file_err(ld, item, "%s", msg);
    }
  }
  return 0;
}

/* load_setting reads one key's value node. */
static int load_setting(struct loader *ld, const struct setting *s,
                        yaml_node_t *v) {
  const char *text;
  char msg[CONFIG_MSG_LEN];
  switch (s->shape) {
  case SHAPE_MAPPING:
    return load_mapping(ld, v, s->sub, s->num_sub);
  case SHAPE_LIST:
    return load_list(ld, s, v);
  case SHAPE_PLAIN:
  case SHAPE_STRING:
    if (node_scalar(ld, v, s->shape, &text) != 0) {
      return -1;
    }
    if (s->set(ld->c, s, text, msg, sizeof(msg)) != 0) {
      return file_err(ld, v, "%s", msg);
    }
    return 0;
  }
  return -1;
}

static const struct setting *find_setting(const struct setting *table,
                                          size_t num, const char *name,
                                          size_t *out_index) {
  for (size_t i = 0; i < num; i++) {
    if (strcmp(table[i].name, name) == 0) {
      *out_index = i;
      return &table[i];
    }
  }
  return NULL;
}

/* load_mapping reads a mapping against a table: every key known, none
 * twice. ld->key names the mapping itself ("" at the top). */
static int load_mapping(struct loader *ld, yaml_node_t *map,
                        const struct setting *table, size_t num) {
  if (map->type != YAML_MAPPING_NODE) {
    return file_err(ld, map, "expected a mapping, got %s", node_kind(map));
  }
  char section[CONFIG_KEY_LEN];
  memcpy(section, ld->key, sizeof(section));
  uint32_t seen = 0;
  for (yaml_node_pair_t *p = map->data.mapping.pairs.start;
       p < map->data.mapping.pairs.top; p++) {
    yaml_node_t *k = yaml_document_get_node(ld->doc, p->key);
    yaml_node_t *v = yaml_document_get_node(ld->doc, p->value);
    memcpy(ld->key, section, sizeof(section));
    if (k->type != YAML_SCALAR_NODE) {
      return file_err(ld, k, "keys must be strings, got %s", node_kind(k));
    }
    const char *name = (const char *)k->data.scalar.value;
    size_t i;
    const struct setting *s = find_setting(table, num, name, &i);
    if (s == NULL || strlen(name) != k->data.scalar.length) {
      return file_err(ld, k, "unknown key \"%.64s\"", name);
    }
    if (seen & (UINT32_C(1) << i)) {
      return file_err(ld, k, "duplicate key \"%s\"", name);
    }
    seen |= UINT32_C(1) << i;
    snprintf(ld->key, sizeof(ld->key), "%s%s%s", section, section[0] ? "." : "",
             name);
    if (load_setting(ld, s, v) != 0) {
      return -1;
    }
  }
  memcpy(ld->key, section, sizeof(section));
  return 0;
}

/* yaml_syntax_err reports libyaml's own failure with its position. */
static int yaml_syntax_err(struct loader *ld, const yaml_parser_t *p) {
  const char *problem = p->problem ? p->problem : "cannot parse";
  if (p->error == YAML_MEMORY_ERROR) {
    problem = "out of memory";
  }
  snprintf(ld->err, ld->err_len, "%s:%zu: YAML syntax error: %s%s%s%s",
           ld->path, p->problem_mark.line + 1, problem, p->context ? " (" : "",
           p->context ? p->context : "", p->context ? ")" : "");
  return -1;
}

/* load_document parses the stream: one document whose root is a mapping
 * (an empty file keeps the defaults). */
static int load_document(struct loader *ld, yaml_parser_t *parser) {
  yaml_document_t doc;
  if (!yaml_parser_load(parser, &doc)) {
    return yaml_syntax_err(ld, parser);
  }
  ld->doc = &doc;
  int rc = 0;
  yaml_node_t *root = yaml_document_get_root_node(&doc);
  if (root != NULL) {
    rc = load_mapping(ld, root, top_settings, ARRAY_LEN(top_settings));
  }
  yaml_document_delete(&doc);
  ld->doc = NULL;
  if (rc != 0 || root == NULL) {
    return rc;
  }
  /* A second document would be silently ignored; refuse it. */
  if (!yaml_parser_load(parser, &doc)) {
    return yaml_syntax_err(ld, parser);
  }
  root = yaml_document_get_root_node(&doc);
  if (root != NULL) {
    rc = file_err(ld, root, "only one YAML document is allowed");
  }
  yaml_document_delete(&doc);
  return rc;
}

static int load_file(struct config *c, const char *path, char *err,
                     size_t err_len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err, err_len, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    snprintf(err, err_len, "%s: not a regular file", path);
    fclose(f);
    return -1;
  }
  struct loader ld = {.path = path, .c = c, .err = err, .err_len = err_len};
  yaml_parser_t parser;
  int rc;
  if (!yaml_parser_initialize(&parser)) {
    snprintf(err, err_len, "%s: out of memory", path);
    rc = -1;
  } else {
    yaml_parser_set_input_file(&parser, f);
    rc = load_document(&ld, &parser);
    yaml_parser_delete(&parser);
  }
  fclose(f);
  return rc;
}

/* ---- the environment ---- */

static int env_err(const struct setting *s, const char *msg, char *err,
                   size_t err_len) {
  snprintf(err, err_len, "env %s: %s", s->env, msg);
  return -1;
}

/* env_list replaces a list setting with comma-separated entries; blanks
 * around entries are ignored, a blank value empties the list. */
static int env_list(struct config *c, const struct setting *s, const char *v,
                    char *msg, size_t msg_len) {
  char *copy = strdup(v);
  if (copy == NULL) {
    return msgf(msg, msg_len, "out of memory");
  }
  s->clear(c, s);
  int rc = 0;
  char *rest = copy;
  int blank = strspn(copy, " \t") == strlen(copy);
  while (!blank && rc == 0 && rest != NULL) {
    char *entry = strsep(&rest, ",");
    entry += strspn(entry, " \t");
    size_t n = strlen(entry);
    while (n > 0 && (entry[n - 1] == ' ' || entry[n - 1] == '\t')) {
      entry[--n] = '\0';
    }
    if (n == 0) {
      rc = msgf(msg, msg_len, "empty entry in the list");
    } else {
      rc = s->set(c, s, entry, msg, msg_len);
    }
  }
  free(copy);
  return rc;
}

static int apply_env(struct config *c, const struct setting *table, size_t num,
                     char *err, size_t err_len) {
  for (size_t i = 0; i < num; i++) {
    const struct setting *s = &table[i];
    if (s->shape == SHAPE_MAPPING) {
      if (apply_env(c, s->sub, s->num_sub, err, err_len) != 0) {
        return -1;
      }
      continue;
    }
    const char *v = s->env ? getenv(s->env) : NULL;
    if (v == NULL) {
      continue;
    }
    char msg[CONFIG_MSG_LEN];
    int rc = s->shape == SHAPE_LIST ? env_list(c, s, v, msg, sizeof(msg))
                                    : s->set(c, s, v, msg, sizeof(msg));
    if (rc != 0) {
      return env_err(s, msg, err, err_len);
    }
  }
  return 0;
}

/* config_check: rules that join several keys, after file and env. */
static int config_check(const struct config *c, char *err, size_t err_len) {
  const char *where = c->path ? c->path : "configuration";
  if ((c->tls_cert_file[0] == '\0') != (c->tls_key_file[0] == '\0')) {
    snprintf(err, err_len,
             "%s: tls.cert_file and tls.key_file are set together or not "
             "at all",
             where);
    return -1;
  }
  if (c->submissions.enabled && c->tls_cert_file[0] == '\0') {
    snprintf(err, err_len,
             "%s: listen.submissions (implicit TLS) needs tls.cert_file and "
             "tls.key_file",
             where);
    return -1;
  }
  return 0;
}

/* ---- public ---- */

struct config *config_load(const char *path, char *err, size_t err_len) {
  char scratch[1];
  if (err == NULL || err_len == 0) {
    err = scratch;
    err_len = sizeof(scratch);
  }
  err[0] = '\0';
  struct config *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  char msg[CONFIG_MSG_LEN];
  if (config_defaults(c, msg, sizeof(msg)) != 0) {
    snprintf(err, err_len, "defaults: %s", msg);
    config_free(c);
    return NULL;
  }
  if (path != NULL) {
    c->path = strdup(path);
    if (c->path == NULL) {
      snprintf(err, err_len, "out of memory");
      config_free(c);
      return NULL;
    }
    if (load_file(c, path, err, err_len) != 0) {
      config_free(c);
      return NULL;
    }
  }
  if (apply_env(c, top_settings, ARRAY_LEN(top_settings), err, err_len) != 0 ||
      config_check(c, err, err_len) != 0) {
    config_free(c);
    return NULL;
  }
  return c;
}

void config_free(struct config *c) {
  if (c == NULL) {
    return;
  }
  for (size_t i = 0; i < c->num_local_domains; i++) {
    free(c->local_domains[i]);
  }
  for (size_t i = 0; i < c->num_relay_domains; i++) {
    free(c->relay_domains[i]);
  }
  free(c->path);
  free(c->hostname);
  free(c->spool_dir);
  free(c->relayhost);
  free(c->transports);
  free(c->local_transport_text);
  for (size_t i = 0; i < c->num_dns_servers; i++) {
    free(c->dns_servers[i]);
  }
  free(c->control_socket);
  free(c->tls_cert_file);
  free(c->tls_key_file);
  free(c->tls_min_version);
  free(c->tls_ca_file);
  free(c->auth_passwd_file);
  free(c->dkim_keys);
  free(c->dkim_default_domain);
  free(c->dmarc_psl_file);
  free(c->dmarc_report_org_name);
  free(c->dmarc_report_email);
  free(c->smime_signers);
  free(c->smime_policies);
  free(c->throttle_redis);
  free(c->throttle_rates);
  free(c->throttle_key_prefix);
  free(c->smime_certs);
  free(c->smime_trust);
  for (size_t i = 0; i < c->num_dmarc_overrides; i++) {
    free(c->dmarc_overrides[i]);
  }
  for (size_t i = 0; i < c->num_dkim_headers; i++) {
    free(c->dkim_headers[i]);
  }
  for (size_t i = 0; i < c->num_dkim_oversign; i++) {
    free(c->dkim_oversign[i]);
  }
  if (c->runtime_free != NULL) {
    c->runtime_free(c->runtime);
  }
  free(c);
}

enum config_tls_level config_tls_level(const struct config *c,
                                       const char *domain) {
  size_t dlen = strlen(domain);
  if (dlen > 0 && domain[dlen - 1] == '.') {
    dlen--;
  }
  const struct config_tls_policy *best = NULL, *star = NULL;
  size_t best_len = 0;
  for (size_t i = 0; i < c->num_tls_policies; i++) {
    const struct config_tls_policy *p = &c->tls_policies[i];
    size_t plen = strlen(p->domain);
    if (strcmp(p->domain, "*") == 0) {
      star = star ? star : p;
    } else if (p->domain[0] != '.') {
      if (plen == dlen && strncasecmp(p->domain, domain, dlen) == 0) {
        return p->level;
      }
    } else if (dlen > plen && plen > best_len &&
               strncasecmp(domain + dlen - plen, p->domain, plen) == 0) {
      best = p;
      best_len = plen;
    }
  }
  if (best != NULL) {
    return best->level;
  }
  return star != NULL ? star->level : c->tls_outbound;
}

const struct config_throttle_rate *config_throttle_rate(const struct config *c,
                                                        const char *domain) {
  size_t dlen = strlen(domain);
  if (dlen > 0 && domain[dlen - 1] == '.') {
    dlen--;
  }
  const struct config_throttle_rate *best = NULL, *star = NULL;
  size_t best_len = 0;
  for (size_t i = 0; i < c->num_throttle_rates; i++) {
    const struct config_throttle_rate *r = &c->throttle_rates[i];
    size_t rlen = strlen(r->domain);
    if (strcmp(r->domain, "*") == 0) {
      star = r;
    } else if (r->domain[0] != '.') {
      if (rlen == dlen && strncasecmp(r->domain, domain, dlen) == 0) {
        return r;
      }
    } else if (dlen > rlen && rlen > best_len &&
               strncasecmp(domain + dlen - rlen, r->domain, rlen) == 0) {
      best = r;
      best_len = rlen;
    }
  }
  return best != NULL ? best : star;
}

/* domain_listed: 1 if domain (any case, one trailing dot ignored) equals
 * an entry; entries are stored lower-case without the dot. */
static int domain_listed(char *const *items, size_t num, const char *domain) {
  if (domain == NULL) {
    return 0;
  }
  size_t n = strlen(domain);
  if (n > 1 && domain[n - 1] == '.') {
    n--;
  }
  for (size_t i = 0; i < num; i++) {
    if (strlen(items[i]) == n && strncasecmp(items[i], domain, n) == 0) {
      return 1;
    }
  }
  return 0;
}

int config_is_local_domain(const struct config *c, const char *domain) {
  return domain_listed(c->local_domains, c->num_local_domains, domain);
}

int config_is_relay_domain(const struct config *c, const char *domain) {
  return domain_listed(c->relay_domains, c->num_relay_domains, domain);
}

void config_route(const struct config *c, const char *domain,
                  struct route *out) {
  const struct route_entry *e =
      route_table_lookup(c->transports, c->num_transports, domain);
  if (e != NULL) {
    *out = e->route;
    return;
  }
  if (config_is_local_domain(c, domain)) {
    *out = c->local_transport;
    return;
  }
  memset(out, 0, sizeof(*out));
  out->port = 25;
  int no_mx = 0;
  if (c->relayhost[0] != '\0' &&
      relayhost_parse(c->relayhost, out->host, sizeof(out->host), &out->port,
                      &no_mx) == 0) {
    out->kind = no_mx ? ROUTE_SMTP_HOST : ROUTE_SMTP_MX;
    return;
  }
  out->kind = ROUTE_SMTP_MX; /* the recipient domain's MX */
  out->host[0] = '\0';
}

/* smime_who_rank: how specifically WHO names addr (lower case): an
 * address equal to it beats its exact domain, which beats a parent
 * domain (longer first); -1 when it does not name it. */
static long smime_who_rank(const char *who, const char *addr) {
  if (strchr(who, '@') != NULL) {
    return strcasecmp(who, addr) == 0 ? 100000 : -1;
  }
  const char *at = strrchr(addr, '@');
  const char *dom = at != NULL ? at + 1 : addr;
  size_t dl = strlen(dom), wl = strlen(who);
  if (strcasecmp(dom, who) == 0) {
    return (long)wl + 1;
  }
  if (dl > wl && dom[dl - wl - 1] == '.' &&
      strcasecmp(dom + dl - wl, who) == 0) {
    return (long)wl;
  }
  return -1;
}

const struct config_smime_signer *config_smime_signer(const struct config *c,
                                                      const char *addr) {
  const struct config_smime_signer *best = NULL;
  long best_rank = -1;
  for (size_t i = 0; i < c->num_smime_signers; i++) {
    long r = smime_who_rank(c->smime_signers[i].who, addr);
    if (r > best_rank) {
      best_rank = r;
      best = &c->smime_signers[i];
    }
  }
  return best;
}

enum config_smime_policy config_smime_policy(const struct config *c,
                                             const char *addr) {
  enum config_smime_policy p = c->smime_encrypt;
  long best_rank = -1;
  for (size_t i = 0; i < c->num_smime_policies; i++) {
    long r = smime_who_rank(c->smime_policies[i].who, addr);
    if (r > best_rank) {
      best_rank = r;
      p = c->smime_policies[i].policy;
    }
  }
  return p;
}
