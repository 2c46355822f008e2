/* policy/access.c — the relay decision at RCPT; see access.h. */
#include "policy/access.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* Replies are static: the verdict points at them. */
static const char text_ok[] = "Recipient ok";
static const char text_denied[] = "Relay access denied";
static const char text_probe[] =
    "Relay access denied: source route or routing characters in address";

int access_client_trusted(const struct config *c,
                          const struct sockaddr *client) {
  return c->open_relay || access_client_in_mynetworks(c, client);
}

int access_client_in_mynetworks(const struct config *c,
                                const struct sockaddr *client) {
  if (client == NULL) {
    return 0;
  }
  for (size_t i = 0; i < c->num_mynetworks; i++) {
    if (cidr_match(&c->mynetworks[i], client)) {
      return 1;
    }
  }
  return 0;
}

/* mailbox_split_at finds the '@' that separates local part and domain:
 * the last one outside a quoted string (RFC 5321 4.1.2 Quoted-string,
 * with backslash quoted-pairs), so "u@ext"@ours splits before "ours".
 * Returns its offset, or -1 if there is none. */
static ptrdiff_t mailbox_split_at(const char *mailbox) {
  ptrdiff_t at = -1;
  int quoted = 0;
  for (ptrdiff_t i = 0; mailbox[i] != '\0'; i++) {
    char ch = mailbox[i];
    if (quoted && ch == '\\' && mailbox[i + 1] != '\0') {
      i++; /* quoted-pair: the next octet is literal */
    } else if (ch == '"') {
      quoted = !quoted;
    } else if (ch == '@' && !quoted) {
      at = i;
    }
  }
  return at;
}

/* local_part_routes: 1 if the local part holds '%', '!' or '@', quoted or
 * not. These are the routing syntaxes (u%ext@ours, ext!u@ours,
 * "u@ext"@ours) that make a relay forward to a third party. */
static int local_part_routes(const char *local, size_t local_len) {
  for (size_t i = 0; i < local_len; i++) {
    if (local[i] == '%' || local[i] == '!' || local[i] == '@') {
      return 1;
    }
  }
  return 0;
}

static void verdict_accept(struct access_verdict *out, const char *reason) {
  out->accept = 1;
  out->code = 250;
  out->enhanced = "2.1.5";
  out->text = text_ok;
  out->reason = reason;
}

static void verdict_reject(struct access_verdict *out, const char *text,
                           const char *reason) {
  out->accept = 0;
  out->code = 554;
  out->enhanced = "5.7.1";
  out->text = text;
  out->reason = reason;
}

void access_check_rcpt(const struct config *c, const struct sockaddr *client,
                       const char *mailbox, int has_source_route,
                       struct access_verdict *out) {
  assert(c != NULL && mailbox != NULL && out != NULL);
  int trusted = access_client_trusted(c, client);
  ptrdiff_t at = mailbox_split_at(mailbox);
  size_t local_len = at < 0 ? strlen(mailbox) : (size_t)at;
  const char *domain = at < 0 ? NULL : mailbox + at + 1;

  /* Rule 1: relay probes, unless the client may relay anyway. */
  if (!trusted && (has_source_route || local_part_routes(mailbox, local_len))) {
    verdict_reject(out, text_probe, "relay_probe");
    return;
  }
  /* Rule 2: mail for us or for domains we relay to. A bare "postmaster"
   * (RFC 5321 4.1.1.3) is always ours. */
  if (domain == NULL && strcasecmp(mailbox, "postmaster") == 0) {
    verdict_accept(out, "local_domain");
    return;
  }
  if (domain != NULL && config_is_local_domain(c, domain)) {
    verdict_accept(out, "local_domain");
    return;
  }
  if (domain != NULL && config_is_relay_domain(c, domain)) {
    verdict_accept(out, "relay_domain");
    return;
  }
  /* Rule 3: trusted clients relay anywhere. */
  if (trusted) {
    verdict_accept(out, c->open_relay ? "open_relay" : "trusted_client");
    return;
  }
  /* Rule 4. */
  verdict_reject(out, text_denied, "relay_denied");
}
