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
 *  2. Recipient domain is a local or relay domain: accept.
 *  3. Client address in mynetworks, or open_relay set: accept.
 *  4. Otherwise 554 5.7.1 Relay access denied.
 * Thread: any; pure. */
#ifndef POSTSEAL_POLICY_ACCESS_H
#define POSTSEAL_POLICY_ACCESS_H

#include <sys/socket.h>

#include "core/config.h"

struct access_verdict {
  int accept;           /* 1 accept, 0 reject */
  int code;             /* reply code when rejected (554) */
  const char *enhanced; /* "5.7.1" */
  const char *text;     /* static reply text */
  const char *reason;   /* short token for logs/metrics: "relay_denied",
                           "relay_probe" */
};

/* access_client_trusted: 1 if the client may relay (mynetworks/open_relay). */
int access_client_trusted(const struct config *c, const struct sockaddr *client);

/* access_check_rcpt decides for one recipient mailbox "local@domain". */
void access_check_rcpt(const struct config *c, const struct sockaddr *client,
                       const char *mailbox, int has_source_route,
                       struct access_verdict *out);

#endif
