/* proto/dns_msg.h — DNS messages on the wire: a query builder and a
 * response parser (RFC 1035 §4, RFC 3596 AAAA, RFC 6891 EDNS(0), RFC 7505
 * null MX, RFC 2308 negative TTLs, RFC 6698 TLSA, RFC 6840 §5.7 AD).
 *
 * Owns nothing but the caller's storage: pure functions over
 * caller-provided bytes; any thread; no allocation. A parsed message
 * (struct dns_msg) is self-contained: every name and rdata byte it points
 * to lies in its own arena, so the packet may be freed after parsing.
 *
 * Names are given and returned in presentation form without the trailing
 * dot ("mx.example.com"; the root is "."). Octets other than 0x21..0x7e,
 * '.' and '\' inside a label appear as \DDD (RFC 1035 §5.1); the builder
 * reads \DDD and \X. A name whose presentation form does not fit in
 * DNS_NAME_TEXT_MAX (only possible with many escapes) is refused. Names
 * are compared ASCII-case-insensitively (RFC 4343).
 *
 * Limits, checked before the data is used: DNS_MSG_MAX_ANSWER answer and
 * DNS_MSG_MAX_AUTHORITY authority records are kept (the rest are counted
 * in num_*_dropped); names are at most 255 octets on the wire, labels 63,
 * a name follows at most DNS_MAX_POINTERS compression pointers, each of
 * which must point strictly before the label sequence that holds it (so
 * no loop and no forward pointer); a CNAME chain is followed for at most
 * DNS_MSG_MAX_CNAME links. */
#ifndef POSTSEAL_PROTO_DNS_MSG_H
#define POSTSEAL_PROTO_DNS_MSG_H

#include <stddef.h>
#include <stdint.h>

#define DNS_HEADER_LEN 12
#define DNS_MAX_NAME_WIRE 255 /* RFC 1035 §2.3.4, root octet included */
#define DNS_MAX_LABEL 63
#define DNS_MAX_POINTERS 128  /* a name has at most 127 labels */
#define DNS_NAME_TEXT_MAX 256 /* presentation form and its NUL */
#define DNS_MSG_MAX_LEN 65535 /* a TCP message; UDP ones are smaller */
#define DNS_MSG_MAX_ANSWER 64
#define DNS_MSG_MAX_AUTHORITY 16
#define DNS_MSG_MAX_CNAME 8
#define DNS_EDNS_UDP_SIZE 1232 /* DNS flag day 2020: no IP fragmentation */
/* Each kept RR stores at most two names; its other rdata (TXT, TLSA) is a
 * copy of its own rdata, so all rdata together fit in one message. */
#define DNS_MSG_ARENA_LEN                                                      \
  ((DNS_MSG_MAX_ANSWER + DNS_MSG_MAX_AUTHORITY) * 2 * DNS_NAME_TEXT_MAX +      \
   DNS_MSG_MAX_LEN)
/* A query: header, one question (name <= 255), one OPT RR. */
#define DNS_QUERY_MAX_LEN (DNS_HEADER_LEN + DNS_MAX_NAME_WIRE + 4 + 11)

/* RR types (RFC 1035 §3.2.2 and the RFCs named). */
#define DNS_TYPE_A 1
#define DNS_TYPE_NS 2
#define DNS_TYPE_CNAME 5
#define DNS_TYPE_SOA 6
#define DNS_TYPE_PTR 12
#define DNS_TYPE_MX 15
#define DNS_TYPE_TXT 16
#define DNS_TYPE_AAAA 28  /* RFC 3596 */
#define DNS_TYPE_OPT 41   /* RFC 6891 */
#define DNS_TYPE_RRSIG 46 /* RFC 4034 */
#define DNS_TYPE_TLSA 52  /* RFC 6698 */
#define DNS_CLASS_IN 1

/* RCODEs (RFC 1035 §4.1.1; 12 bits with the EDNS extension). */
#define DNS_RCODE_NOERROR 0
#define DNS_RCODE_FORMERR 1
#define DNS_RCODE_SERVFAIL 2
#define DNS_RCODE_NXDOMAIN 3
#define DNS_RCODE_NOTIMP 4
#define DNS_RCODE_REFUSED 5

/* dns_query_build flags. RD is always set. */
#define DNS_QUERY_AD 0x1u   /* AD=1: report validation (RFC 6840 §5.7) */
#define DNS_QUERY_EDNS 0x2u /* an OPT RR, UDP size DNS_EDNS_UDP_SIZE */
#define DNS_QUERY_DO 0x4u   /* DO=1 (RFC 3225); implies DNS_QUERY_EDNS */

/* One resource record of a decoded type (A, AAAA, CNAME, PTR, MX, TXT,
 * SOA, TLSA) and class IN. Pointers lie in the owning dns_msg's arena (or, for
 * a copy, wherever the copier put them). */
struct dns_rr {
  const char *owner; /* presentation form, case as received */
  uint16_t type;
  uint16_t rclass;
  uint32_t ttl; /* a TTL with the top bit set reads as 0 (RFC 2181 §8) */
  union {
    uint8_t a[4];     /* network byte order */
    uint8_t aaaa[16]; /* network byte order */
    const char *cname;
    const char *ptr; /* PTRDNAME (RFC 1035 §3.3.12) */
    struct {
      uint16_t pref;
      const char *exchange; /* "." is the null MX of RFC 7505 */
    } mx;
    struct {
      const uint8_t *data; /* the character-strings concatenated */
      size_t data_len;
    } txt;
    struct {
      uint32_t serial, refresh, retry, expire, minimum;
    } soa; /* MNAME and RNAME are checked, not kept */
    struct {
      uint8_t usage, selector, mtype;
      const uint8_t *data;
      size_t data_len;
    } tlsa;
  } rd;
};

struct dns_msg {
  uint16_t id;
  unsigned opcode;
  unsigned rcode; /* with the OPT's extended bits */
  int qr, aa, tc, rd, ra, ad, cd;
  int has_question; /* 0 only for a message with QDCOUNT 0 */
  char qname[DNS_NAME_TEXT_MAX];
  uint16_t qtype, qclass;
  int has_opt; /* an OPT RR in the additional section */
  uint16_t udp_size;
  unsigned edns_version;
  int do_bit;
  size_t num_answer;
  size_t num_answer_dropped; /* decoded type beyond DNS_MSG_MAX_ANSWER */
  size_t num_answer_skipped; /* other types and classes */
  struct dns_rr answer[DNS_MSG_MAX_ANSWER];
  size_t num_authority;
  size_t num_authority_dropped;
  struct dns_rr authority[DNS_MSG_MAX_AUTHORITY];
  size_t arena_len;
  uint8_t arena[DNS_MSG_ARENA_LEN];
};

/* The RRset for a name and type in the answer section, after CNAMEs. */
struct dns_rrset {
  const char *owner; /* qname, or the last CNAME target followed */
  size_t num_cnames; /* CNAME links followed */
  uint32_t ttl;      /* least TTL over the CNAMEs followed and the RRset */
  size_t num_rrs;
  const struct dns_rr *rrs[DNS_MSG_MAX_ANSWER]; /* in answer order */
};

enum dns_chain {
  DNS_CHAIN_FOUND, /* num_rrs > 0 */
  DNS_CHAIN_EMPTY, /* no RR of the type at the final owner */
  DNS_CHAIN_LOOP,  /* a CNAME loop, or more than DNS_MSG_MAX_CNAME links */
};

/* dns_query_build writes a query for (name, type, class IN) with RD=1 into
 * out (cap octets; DNS_QUERY_MAX_LEN always suffice) and its length into
 * *out_len. flags: DNS_QUERY_*. Returns 0, or -1 if the name is not a
 * valid presentation-form name or cap is too small. */
int dns_query_build(uint8_t *out, size_t cap, size_t *out_len, uint16_t id,
                    const char *name, uint16_t type, unsigned flags);

/* dns_msg_parse decodes a whole message (QR either way) into *out.
 * Returns 0, or -1 with *out_why set to a short static reason: truncated,
 * a bad name or pointer, rdata that does not match its type, an OPT out of
 * place, more than one question, or bytes after the last record. */
int dns_msg_parse(struct dns_msg *out, const char **out_why, const uint8_t *in,
                  size_t in_len);

/* dns_msg_rrset finds the RRset of qtype for qname in m's answer section,
 * following CNAMEs (not when qtype is CNAME). out->rrs point into m. */
enum dns_chain dns_msg_rrset(struct dns_rrset *out, const struct dns_msg *m,
                             const char *qname, uint16_t qtype);

/* dns_msg_negative_ttl: 1 if m's authority section holds an SOA, with
 * *out_ttl = min(SOA TTL, SOA MINIMUM) (RFC 2308 §5); else 0. */
int dns_msg_negative_ttl(const struct dns_msg *m, uint32_t *out_ttl);

/* dns_name_canon writes name in canonical presentation form: lower case,
 * no trailing dot, "." for the root, only the escapes the parser writes.
 * Returns 0, or -1 if name is not a valid name. */
int dns_name_canon(char out[DNS_NAME_TEXT_MAX], const char *name);

/* dns_name_equal: 1 if two presentation-form names (as dns_msg_parse or
 * dns_name_canon write them) are the same name, ignoring ASCII case and a
 * trailing dot. */
int dns_name_equal(const char *a, const char *b);

/* dns_type_name is "A", "MX", ... or "TYPE<n>" written into buf. */
const char *dns_type_name(uint16_t type, char buf[16]);

/* dns_msg_txt_one: the policy-record rule of RFC 8461 §3.1 and RFC 8460
 * §3 ("if the number of resulting records is not one ... there is
 * none"): among the TXT records of rrs, those for which is_kind(text) is
 * 1 are counted into *out_num; the last of them is returned (NULL if
 * none). The caller treats *out_num != 1 as no (or an invalid) record. */
const struct dns_rr *dns_msg_txt_one(const struct dns_rr *rrs, size_t num_rrs,
                                     int (*is_kind)(const uint8_t *text,
                                                    size_t text_len),
                                     size_t *out_num);

#endif
