/* policy/spf.h — Sender Policy Framework (RFC 7208): check_host() as a
 * sans-I/O state machine.
 *
 * Owns: SPF record selection (§4.5: the TXT records starting "v=spf1",
 * exactly one or permerror), parsing (§12 ABNF), evaluation of every
 * mechanism (all, include, a, mx, ptr, ip4, ip6, exists) and modifier
 * (redirect, exp; unknown ones ignored), macro expansion (§7, including
 * the exp= explanation's c, r and t letters), dual CIDR lengths, and the
 * limits: 10 DNS-querying terms (include, a, mx, ptr, exists, redirect),
 * 10 MX names per mx, 10 PTR names per ptr/%{p}, 2 void lookups (§4.6.4).
 *
 * Never does I/O: the caller runs spf_step() until it answers SPF_DONE;
 * SPF_NEED_DNS hands out one (name, type) to look up, whose answer comes
 * back through spf_answer() (a struct dns_answer, as policy/dns.h gives
 * it: TXT, A, AAAA, MX or PTR RRsets). One lookup at a time, in the order
 * RFC 7208 evaluates. The caller owns time limits (RFC 7208 §4.6.4 asks
 * for at least 20 s in all): on expiry it hands in DNS_TEMPFAIL answers.
 *
 * Thread: a query belongs to one thread; no globals. */
#ifndef POSTSEAL_POLICY_SPF_H
#define POSTSEAL_POLICY_SPF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "policy/dns.h"

#define SPF_MAX_DNS_TERMS 10 /* §4.6.4 */
#define SPF_MAX_VOID 2       /* §4.6.4 */
#define SPF_MAX_NAMES 10     /* MX / PTR names per term (§4.6.4) */
#define SPF_MAX_RECORD 4096  /* longest record text considered */
#define SPF_MAX_EXPLANATION 512

enum spf_result {
  SPF_NONE,
  SPF_NEUTRAL,
  SPF_PASS,
  SPF_FAIL,
  SPF_SOFTFAIL,
  SPF_TEMPERROR,
  SPF_PERMERROR,
};

/* "none", "neutral", "pass", "fail", "softfail", "temperror",
 * "permerror" (RFC 8601 and Received-SPF spelling). */
const char *spf_result_name(enum spf_result r);

struct spf_request {
  const struct sockaddr *client; /* AF_INET or AF_INET6 (v4-mapped v6 is
                                    treated as IPv4, §5) */
  const char *sender;   /* MAIL FROM mailbox; "" for the null sender (then
                           postmaster@helo, §2.4) */
  const char *helo;     /* the HELO/EHLO name */
  const char *receiver; /* our host name, for %{r} */
  int64_t now;          /* seconds since the epoch, for %{t} */
  /* Which identity: 0 = MAIL FROM (domain of sender, or of helo for the
   * null sender), 1 = HELO (domain = helo, §2.3). */
  int check_helo;
};

struct spf_query;

/* spf_new copies what it needs from r. NULL only when out of memory. A
 * domain that is not a valid name (§4.3) gives SPF_NONE at once (no
 * lookup). */
struct spf_query *spf_new(const struct spf_request *r);
void spf_free(struct spf_query *q);

enum spf_step { SPF_DONE, SPF_NEED_DNS };

/* spf_step advances until it needs a lookup (*name, *type set; valid until
 * the next call) or has a result. */
enum spf_step spf_step(struct spf_query *q, const char **name, uint16_t *type);

/* spf_answer hands in the answer to the last SPF_NEED_DNS. */
void spf_answer(struct spf_query *q, const struct dns_answer *a);

enum spf_result spf_result(const struct spf_query *q);

/* spf_domain: the domain checked (the sender's or HELO's), lower case. */
const char *spf_domain(const struct spf_query *q);

/* spf_detail: for logs and Received-SPF comments: the mechanism that
 * matched ("mechanism ip4:192.0.2.0/24 matched"), or the error
 * ("include loop", "more than 10 DNS lookups", "2 void lookups", "syntax
 * error at ..."). Never NULL. */
const char *spf_detail(const struct spf_query *q);

/* spf_explanation: on SPF_FAIL, the expanded exp= text (§6.2) when the
 * record had one and it could be fetched and expanded, else NULL; only
 * printable US-ASCII. */
const char *spf_explanation(const struct spf_query *q);

/* spf_lookups: DNS lookups made (for metrics). */
unsigned spf_lookups(const struct spf_query *q);

/* spf_record_check parses one record text alone (no DNS): 0 if it is a
 * syntactically valid SPF record, else -1 with the reason. For tests,
 * `postseal` and the fuzz target. */
int spf_record_check(const char *txt, size_t len, char *err, size_t err_len);

#endif
