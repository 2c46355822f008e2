/* core/netaddr.c — CIDR prefixes, host:port strings, address formatting;
 * see netaddr.h. Parsers copy the input into a bounded local buffer first,
 * so every later step works on a known length. */
#include "core/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

/* Longest textual IPv6 address with brackets and a "/128": 47 + 2 + 4. */
#define NETADDR_MAX_CIDR_TEXT 64
/* Longest host:port we look at: a DNS name (253) + brackets + ":65535". */
#define NETADDR_MAX_HOSTPORT_TEXT 264
#define NETADDR_MAX_NAME 253
#define NETADDR_MAX_LABEL 63

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0,    0,
                                            0, 0, 0, 0, 0xff, 0xff};

/* parse_decimal reads an unsigned decimal of 1..5 digits with no sign and
 * no leading zero (except "0" itself). Returns 0 or -1. */
static int parse_decimal(const char *s, unsigned max, unsigned *out) {
  size_t n = strlen(s);
  if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) {
    return -1;
  }
  unsigned v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') {
      return -1;
    }
    v = v * 10 + (unsigned)(s[i] - '0');
  }
  if (v > max) {
    return -1;
  }
  *out = v;
  return 0;
}

/* host_bits_clear: 1 if no bit below `prefix` is set in addr. */
static int host_bits_clear(const uint8_t *addr, size_t addr_len,
                           unsigned prefix) {
  for (size_t i = 0; i < addr_len; i++) {
    unsigned first_bit = (unsigned)i * 8;
    uint8_t host_mask;
    if (prefix >= first_bit + 8) {
      host_mask = 0;
    } else if (prefix <= first_bit) {
      host_mask = 0xff;
    } else {
      host_mask = (uint8_t)(0xff >> (prefix - first_bit));
    }
    if (addr[i] & host_mask) {
      return 0;
    }
  }
  return 1;
}

/* prefix_equal: 1 if the first `prefix` bits of a and b agree. */
static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix) {
  size_t whole = prefix / 8;
  if (memcmp(a, b, whole) != 0) {
    return 0;
  }
  unsigned rest = prefix % 8;
  if (rest == 0) {
    return 1;
  }
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

/* strip_brackets turns "[x]" into "x" in place. Returns 1 if stripped,
 * 0 if there were none, -1 if they do not pair. */
static int strip_brackets(char *s) {
  size_t n = strlen(s);
  int open = n > 0 && s[0] == '[';
  int close = n > 0 && s[n - 1] == ']';
  if (!open && !close) {
    return 0;
  }
  if (!open || !close || n < 2) {
    return -1;
  }
  memmove(s, s + 1, n - 2);
  s[n - 2] = '\0';
  return 1;
}

int cidr_parse(const char *in, struct cidr *out) {
  char text[NETADDR_MAX_CIDR_TEXT];
  size_t in_len = strlen(in);
  if (in_len == 0 || in_len >= sizeof(text)) {
    return -1;
  }
  memcpy(text, in, in_len + 1);

  char *slash = strchr(text, '/');
  const char *prefix_text = NULL;
  if (slash != NULL) {
    *slash = '\0';
    prefix_text = slash + 1;
  }
  int bracketed = strip_brackets(text);
  if (bracketed < 0) {
    return -1;
  }

  struct cidr c;
  memset(&c, 0, sizeof(c));
  size_t addr_len;
  if (!bracketed && inet_pton(AF_INET, text, c.addr) == 1) {
    c.family = AF_INET;
    addr_len = 4;
  } else if (inet_pton(AF_INET6, text, c.addr) == 1) {
    c.family = AF_INET6;
    addr_len = 16;
  } else {
    return -1;
  }
  c.prefix = (unsigned)addr_len * 8;
  if (prefix_text != NULL &&
      parse_decimal(prefix_text, (unsigned)addr_len * 8, &c.prefix) != 0) {
    return -1;
  }
  /* Host bits set below the prefix are refused: "10.1.2.3/8" is most
   * likely a typo for a narrower network, and silently widening or
   * narrowing a trust boundary is worse than failing to start. */
  if (!host_bits_clear(c.addr, addr_len, c.prefix)) {
    return -1;
  }
  *out = c;
  return 0;
}

int cidr_match(const struct cidr *c, const struct sockaddr *sa) {
  if (sa == NULL) {
    return 0;
  }
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    if (c->family != AF_INET) {
      return 0;
    }
    return prefix_equal(c->addr, (const uint8_t *)&sin->sin_addr, c->prefix);
  }
  if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
    const uint8_t *a = sin6->sin6_addr.s6_addr;
    if (c->family == AF_INET6) {
      return prefix_equal(c->addr, a, c->prefix);
    }
    /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d. */
    if (c->family == AF_INET && memcmp(a, v4mapped_prefix, 12) == 0) {
      return prefix_equal(c->addr, a + 12, c->prefix);
    }
  }
  return 0;
}

/* hostname_valid: 1 if s is a dotted sequence of letter/digit/hyphen
 * labels (RFC 1123 2.1), each 1..63 octets, 253 in all. */
static int hostname_valid(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > NETADDR_MAX_NAME) {
    return 0;
  }
  size_t label = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '.') {
      if (label == 0 || s[i - 1] == '-') {
        return 0;
      }
      label = 0;
      continue;
    }
    int ldh = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-';
    if (!ldh || (label == 0 && ch == '-') || ++label > NETADDR_MAX_LABEL) {
      return 0;
    }
  }
  return s[n - 1] != '-';
}

int netaddr_hostname_valid(const char *s) {
  size_t n = strlen(s);
  if (n > 1 && s[n - 1] == '.') {
    /* A fully qualified name with its root dot: check the rest. */
    char name[NETADDR_MAX_NAME + 1];
    if (n - 1 > NETADDR_MAX_NAME) {
      return 0;
    }
    memcpy(name, s, n - 1);
    name[n - 1] = '\0';
    return hostname_valid(name);
  }
  return hostname_valid(s);
}

/* host_check validates a host already split from its port: "" (wildcard,
 * not inside brackets), an IPv4 or IPv6 literal, or a DNS name. IPv6 only
 * comes bracketed, since split_hostport refuses a second colon. Returns 0
 * or -1. */
static int host_check(const char *host, int bracketed) {
  uint8_t addr[16];
  if (host[0] == '\0') {
    return bracketed ? -1 : 0;
  }
  if (inet_pton(AF_INET, host, addr) == 1) {
    return 0;
  }
  if (bracketed && inet_pton(AF_INET6, host, addr) == 1) {
    return 0;
  }
  return netaddr_hostname_valid(host) ? 0 : -1;
}

/* copy_host writes host into out (host_len bytes, NUL included). */
static int copy_host(const char *host, char *out, size_t out_len) {
  size_t n = strlen(host);
  if (n >= out_len) {
    return -1;
  }
  memcpy(out, host, n + 1);
  return 0;
}

/* split_hostport splits text in place at the port colon: "[h]:p", "h:p",
 * ":p", and with allow_no_port also "[h]", "h". Sets *host (brackets
 * removed), *port_text (NULL if absent) and *bracketed. Returns 0 or -1. */
static int split_hostport(char *text, int allow_no_port, char **host,
                          char **port_text, int *bracketed) {
  *port_text = NULL;
  *bracketed = 0;
  if (text[0] == '[') {
    char *close = strchr(text, ']');
    if (close == NULL) {
      return -1;
    }
    *close = '\0';
    *host = text + 1;
    *bracketed = 1;
    if (close[1] == ':') {
      *port_text = close + 2;
    } else if (close[1] != '\0') {
      return -1; /* trailing bytes after "]" */
    }
  } else {
    char *colon = strchr(text, ':');
    *host = text;
    if (colon != NULL) {
      if (strchr(colon + 1, ':') != NULL) {
        return -1; /* an unbracketed IPv6 address is ambiguous */
      }
      *colon = '\0';
      *port_text = colon + 1;
    }
  }
  if (*port_text == NULL && !allow_no_port) {
    return -1;
  }
  return 0;
}

/* hostport_split_check does the work shared by hostport_parse and
 * relayhost_parse. default_port 0 means the port is mandatory. */
static int hostport_split_check(const char *in, int allow_empty_host,
                                uint16_t default_port, char *host,
                                size_t host_len, uint16_t *out_port,
                                int *out_bracketed) {
  char text[NETADDR_MAX_HOSTPORT_TEXT];
  size_t in_len = strlen(in);
  if (in_len == 0 || in_len >= sizeof(text)) {
    return -1;
  }
  memcpy(text, in, in_len + 1);
  char *h;
  char *port_text;
  int bracketed;
  if (split_hostport(text, default_port != 0, &h, &port_text, &bracketed) !=
      0) {
    return -1;
  }
  if (host_check(h, bracketed) != 0 || (!allow_empty_host && h[0] == '\0')) {
    return -1;
  }
  unsigned port = default_port;
  if (port_text != NULL &&
      (parse_decimal(port_text, 65535, &port) != 0 || port == 0)) {
    return -1;
  }
  if (copy_host(h, host, host_len) != 0) {
    return -1;
  }
  *out_port = (uint16_t)port;
  *out_bracketed = bracketed;
  return 0;
}

int hostport_parse(const char *in, char *host, size_t host_len,
                   uint16_t *out_port) {
  int bracketed;
  return hostport_split_check(in, 1, 0, host, host_len, out_port, &bracketed);
}

int relayhost_parse(const char *in, char *host, size_t host_len,
                    uint16_t *out_port, int *out_no_mx) {
  /* RFC 5321 5.1 routing: "[x]" names the host itself (no MX lookup), a
   * bare name is looked up as a mail domain (MX, then A/AAAA). */
  int bracketed;
  if (hostport_split_check(in, 0, 25, host, host_len, out_port, &bracketed) !=
      0) {
    return -1;
  }
  *out_no_mx = bracketed;
  return 0;
}

int sockaddr_format(const struct sockaddr *sa, char *out, size_t out_len) {
  if (sa == NULL || out_len > INT32_MAX) {
    return -1;
  }
  const void *addr;
  int family = sa->sa_family;
  if (family == AF_INET) {
    addr = &((const struct sockaddr_in *)sa)->sin_addr;
  } else if (family == AF_INET6) {
    const uint8_t *a6 = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    addr = a6;
    /* Logs and policy show a dual-stack listener's IPv4 clients as IPv4. */
    if (memcmp(a6, v4mapped_prefix, 12) == 0) {
      family = AF_INET;
      addr = a6 + 12;
    }
  } else {
    return -1;
  }
  return inet_ntop(family, addr, out, (socklen_t)out_len) != NULL ? 0 : -1;
}
