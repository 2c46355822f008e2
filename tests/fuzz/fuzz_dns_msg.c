/* Fuzz target: proto/dns_msg response parser. Checks, beyond memory
 * safety, that a parsed message keeps its limits (kept RRs, arena, name
 * lengths, CNAME links), and round-trips names through the builder: every
 * owner name and the question build into a query that parses back to the
 * same name (and, for the question, the same case and type). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/dns_msg.h"

static struct dns_msg msg, again; /* large: not on the stack */

static void check_name_round_trip(const char *name, uint16_t type, int exact) {
  uint8_t q[DNS_QUERY_MAX_LEN];
  size_t len;
  const char *why;
  if (strlen(name) >= DNS_NAME_TEXT_MAX) {
    abort();
  }
  if (dns_query_build(q, sizeof q, &len, 7, name, type,
                      DNS_QUERY_AD | DNS_QUERY_DO) != 0) {
    abort(); /* a name the parser wrote must build */
  }
  if (dns_msg_parse(&again, &why, q, len) != 0 || !again.has_question ||
      again.qtype != type || !again.has_opt || !again.do_bit || !again.ad) {
    abort();
  }
  if (exact ? strcmp(again.qname, name) != 0
            : !dns_name_equal(again.qname, name)) {
    abort();
  }
}

static void check_rrs(const struct dns_rr *rrs, size_t n, size_t max,
                      size_t in_len) {
  if (n > max) {
    abort();
  }
  for (size_t i = 0; i < n; i++) {
    const struct dns_rr *rr = &rrs[i];
    check_name_round_trip(rr->owner, rr->type, 1);
    if (rr->type == DNS_TYPE_TXT && rr->rd.txt.data_len > in_len) {
      abort();
    }
    if (rr->type == DNS_TYPE_MX &&
        strlen(rr->rd.mx.exchange) >= DNS_NAME_TEXT_MAX) {
      abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *why = NULL;
  if (dns_msg_parse(&msg, &why, data, size) != 0) {
    if (why == NULL) {
      abort();
    }
    return 0;
  }
  if (msg.arena_len > DNS_MSG_ARENA_LEN || size < DNS_HEADER_LEN) {
    abort();
  }
  check_rrs(msg.answer, msg.num_answer, DNS_MSG_MAX_ANSWER, size);
  check_rrs(msg.authority, msg.num_authority, DNS_MSG_MAX_AUTHORITY, size);
  if (msg.has_question) {
    static const uint16_t types[] = {DNS_TYPE_A,    DNS_TYPE_AAAA,
                                     DNS_TYPE_MX,   DNS_TYPE_TXT,
                                     DNS_TYPE_TLSA, DNS_TYPE_CNAME};
    struct dns_rrset set;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
      enum dns_chain c = dns_msg_rrset(&set, &msg, msg.qname, types[i]);
      if (set.num_cnames > DNS_MSG_MAX_CNAME || set.num_rrs > msg.num_answer ||
          (c == DNS_CHAIN_FOUND) != (set.num_rrs > 0)) {
        abort();
      }
    }
    check_name_round_trip(msg.qname, msg.qtype, 1);
  }
  uint32_t ttl;
  (void)dns_msg_negative_ttl(&msg, &ttl);
  return 0;
}
