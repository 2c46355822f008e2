/* core/route.h — where a recipient's mail goes: transport specifications
 * ("smtp:[host]:port", "lmtp:unix:/path", "maildir:/var/mail/%d/%u") and
 * the table that maps recipient domains to them.
 *
 * Owns: parsing and matching only (no DNS, no sockets, no files). The
 * config loader parses every spec at load time, so a bad one is a
 * FILE:LINE error; delivery asks route_table_lookup() per recipient.
 *
 * Spec grammar (Postfix transport(5) style):
 *   smtp:                 MX lookup of the recipient's domain, port 25
 *   smtp:host[:port]      MX lookup of host
 *   smtp:[host][:port]    host's A/AAAA only (no MX); IPv6 inside []
 *   lmtp:host:port, lmtp:[host]:port   LMTP over TCP (RFC 2033)
 *   lmtp:unix:/path       LMTP over a unix stream socket
 *   maildir:TEMPLATE      a Maildir per recipient; TEMPLATE has %u (local
 *                         part), %d (domain), %% (see core/maildir.h)
 *   error:TEXT            every recipient bounces with 550 5.1.1 TEXT
 *                         (or the enhanced code TEXT starts with, "5.7.1 no")
 *
 * Table entries are "DOMAIN SPEC": DOMAIN matches exactly (case
 * insensitive), ".example.com" matches every subdomain of example.com
 * (not example.com itself), and "*" matches everything. The most specific
 * entry wins: exact, then the longest ".suffix", then "*".
 *
 * Pure functions; any thread. */
#ifndef POSTSEAL_CORE_ROUTE_H
#define POSTSEAL_CORE_ROUTE_H

#include <stddef.h>
#include <stdint.h>

enum route_kind {
  ROUTE_SMTP_MX,   /* host = the domain whose MX to use ("" = rcpt's) */
  ROUTE_SMTP_HOST, /* host, port: A/AAAA only */
  ROUTE_LMTP_TCP,  /* host, port: A/AAAA only (or a literal) */
  ROUTE_LMTP_UNIX, /* path */
  ROUTE_MAILDIR,   /* path: the template */
  ROUTE_ERROR,     /* path: the reply text */
};

struct route {
  enum route_kind kind;
  char host[256]; /* no brackets */
  uint16_t port;
  char path[512];
};

/* route_parse reads one spec. Returns 0, or -1 with the reason in err. */
int route_parse(const char *spec, struct route *out, char *err, size_t err_len);

/* route_format writes the canonical spec of r ("smtp:[h]:25", "smtp:",
 * "lmtp:unix:/p", ...) into out: the destination's name in logs and keys. */
void route_format(const struct route *r, char *out, size_t out_len);

struct route_entry {
  char domain[256]; /* lowercased: "example.com", ".example.com", "*" */
  struct route route;
};

/* route_entry_parse reads a table line "DOMAIN SPEC" (blanks between).
 * Returns 0, or -1 with the reason in err. */
int route_entry_parse(const char *line, struct route_entry *out, char *err,
                      size_t err_len);

/* route_table_lookup returns the most specific entry for domain (no
 * trailing dot, any case), or NULL when none matches. */
const struct route_entry *route_table_lookup(const struct route_entry *table,
                                             size_t n, const char *domain);

#endif
