/* core/netaddr.h — IP addresses, CIDR prefixes and host:port strings.
 *
 * Owns: parsing and matching only (no DNS, no sockets). Used by the config
 * loader (to validate at load time, so errors carry file:line) and by
 * policy/access (client networks). Pure functions; any thread. */
#ifndef POSTSEAL_CORE_NETADDR_H
#define POSTSEAL_CORE_NETADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct cidr {
  int family;       /* AF_INET or AF_INET6 */
  uint8_t addr[16]; /* network byte order; IPv4 in the first 4 bytes */
  unsigned prefix;  /* 0..32 or 0..128 */
};

/* cidr_parse accepts "a.b.c.d/n", "a.b.c.d" (/32), "x::y/n", "x::y"
 * (/128), with or without [] around an IPv6 address. Host bits set below
 * the prefix are an error (Postfix warns; we refuse, so a typo is seen).
 * Returns 0 or -1. */
int cidr_parse(const char *in, struct cidr *out);
/* cidr_match: 1 if the socket address lies in the prefix. An IPv4-mapped
 * IPv6 address (::ffff:a.b.c.d) matches IPv4 prefixes. An AF_INET address
 * never matches an IPv6 prefix (so ::/0 does not trust every IPv4 client);
 * other families and NULL never match. */
int cidr_match(const struct cidr *c, const struct sockaddr *sa);

/* hostport_parse accepts "host:port", "[v6]:port", ":port" (all
 * addresses). host is copied (at most host_len-1 bytes; longer is an
 * error) without brackets. An empty host means the wildcard address. host
 * is an IPv4 literal, a DNS name, or inside brackets an IPv6 literal (an
 * IPv4 literal or name in brackets is accepted too). The port is 1..65535
 * in decimal. Returns 0 or -1. */
int hostport_parse(const char *in, char *host, size_t host_len,
                   uint16_t *out_port);

/* relayhost_parse accepts the relayhost forms "[host]:port", "[host]",
 * "host:port" and "host" (host: a DNS name or an IPv4 literal, or inside
 * brackets also an IPv6 literal). Brackets mean "this host, no MX lookup"
 * (*out_no_mx = 1); the port defaults to 25. Returns 0 or -1. */
int relayhost_parse(const char *in, char *host, size_t host_len,
                    uint16_t *out_port, int *out_no_mx);

/* netaddr_hostname_valid: 1 if s is a syntactically valid DNS host name
 * (letter/digit/hyphen labels of 1..63 octets, 253 in all, one optional
 * trailing dot). */
int netaddr_hostname_valid(const char *s);

/* sockaddr_format writes the address without port ("127.0.0.1", "::1";
 * IPv4-mapped shown as IPv4) into out. Returns 0 or -1. */
int sockaddr_format(const struct sockaddr *sa, char *out, size_t out_len);

#endif
