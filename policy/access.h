/* policy/access.h — relay access: may this client send to this recipient?
 *
 * Owns: the relay decision only (RFC 5321 §3.6, no open relay). Called by
 * the daemon wiring at RCPT; takes the config, the client address and the
 * recipient mailbox, gives a verdict with the reply to send. Knows no loop
 * or socket. Rules, in order:
 *  1. Source-routed or routing-looking local parts are relay probes: a
 *     local part containing '%', '!' or '@' (quoted "u@ext"@ours), or an
 *     address that arrived with a source route (@ours:u@ext, passed here as
 *     the final mailbox with has_source_route=1), are refused with
 *     554 5.7.1 unless the client may relay anyway (mynetworks or
 *     open_relay), since such forms are how open relays are abused.
 *  2. Recipient domain is a local or relay domain: accept. So is a bare
 *     "Postmaster" without domain (RFC 5321 4.1.1.3). Domains match
 *     case-insensitively, a trailing dot ignored; an address literal
 *     (u@[192.0.2.1]) is local only if listed verbatim.
 *  3. Client address in mynetworks, or open_relay set: accept.
 *  4. Otherwise 554 5.7.1 Relay access denied.
 * Thread: any; pure. */
#ifndef POSTSEAL_POLICY_ACCESS_H
#define POSTSEAL_POLICY_ACCESS_H

#include <sys/socket.h>

#include "core/config.h"

struct access_verdict {
  int accept;           /* 1 accept, 0 reject */
  int code;             /* reply code: 554 when rejected, 250 accepted */
  const char *enhanced; /* "5.7.1" rejected, "2.1.5" accepted */
  const char *text;     /* static reply text */
  const char *reason;   /* short static token for logs/metrics. Rejected:
                           "relay_denied", "relay_probe"; accepted:
                           "local_domain", "relay_domain",
                           "trusted_client", "open_relay" */
};

/* access_client_trusted: 1 if the client may relay (mynetworks/open_relay). */
int access_client_trusted(const struct config *c,
                          const struct sockaddr *client);

/* access_client_in_mynetworks: 1 if the client is in mynetworks (an
 * open relay does not make everyone's mail ours to sign). */
int access_client_in_mynetworks(const struct config *c,
                                const struct sockaddr *client);

/* access_check_rcpt decides for one recipient mailbox "local@domain". */
void access_check_rcpt(const struct config *c, const struct sockaddr *client,
                       const char *mailbox, int has_source_route,
                       struct access_verdict *out);

#endif
