/* policy/mta_sts.h — MTA-STS (RFC 8461): the _mta-sts TXT record (§3.1),
 * the policy file (§3.2), MX host matching (§4.1), and a cache of the
 * policies fetched (§5.1).
 *
 * Owns: parsing only for the record and the file (bytes in, a struct
 * out, no allocation, any thread, no clock); the cache owns its entries.
 * It knows no socket and no DNS: core/daemon/mtasts.c and the CLI look
 * the record up and fetch the file (crypto/https.h), and hand the bytes
 * here.
 *
 * Time: the cache is told the time (seconds, any clock that does not go
 * back, the same for every call); nothing here reads a clock.
 *
 * Thread: the parsers and mta_sts_mx_match are pure. A cache is shared
 * by every thread (one mutex inside); what it hands out is a copy, so no
 * pointer into it outlives the call.
 *
 * Limits (checked before the data is used): a record's id is 1 to
 * MTA_STS_MAX_ID alphanumerics; a policy file is at most
 * MTA_STS_MAX_POLICY_LEN octets with at most MTA_STS_MAX_MX mx patterns
 * (MTA_STS_MX_TEXT_LEN octets together); max_age at most
 * MTA_STS_MAX_MAX_AGE; names at most MTA_STS_MAX_NAME octets. */
#ifndef POSTSEAL_POLICY_MTA_STS_H
#define POSTSEAL_POLICY_MTA_STS_H

#include <stddef.h>
#include <stdint.h>

#include "proto/dns_msg.h"

#define MTA_STS_MAX_ID 32            /* §3.1: 1*32(ALPHA / DIGIT) */
#define MTA_STS_MAX_POLICY_LEN 65536 /* §3.3: 64 KiB suggested */
#define MTA_STS_MAX_MAX_AGE 31557600 /* §3.2: about a year */
#define MTA_STS_MAX_MX 64            /* mx patterns kept per policy */
#define MTA_STS_MX_TEXT_LEN 8192     /* all patterns with their NULs */
#define MTA_STS_MAX_NAME 253         /* a domain without its dot */
/* §3.3: after a failed fetch, the id is not fetched again for five
 * minutes (seconds). */
#define MTA_STS_RETRY_AFTER 300
#define MTA_STS_CACHE_DEFAULT_MAX 1024   /* policy domains cached */
#define MTA_STS_CACHE_MAX_MAX (1u << 20) /* mta_sts_cache_new caps here */
#define MTA_STS_ERR_LEN 160              /* room for any reason below */

enum mta_sts_mode {
  MTA_STS_MODE_NONE,    /* the domain withdrew its policy */
  MTA_STS_MODE_TESTING, /* report, deliver anyway */
  MTA_STS_MODE_ENFORCE, /* only to matching MX hosts, with verified TLS */
};

/* A parsed policy. Plain data: may be copied by value. */
struct mta_sts_policy {
  enum mta_sts_mode mode;
  uint32_t max_age; /* seconds */
  size_t num_mx;
  uint16_t mx_off[MTA_STS_MAX_MX]; /* into mx_text, NUL-terminated */
  char mx_text[MTA_STS_MX_TEXT_LEN];
};

/* mta_sts_policy_mx: the i-th mx pattern ("mail.example.com",
 * "*.example.net"), as the file spelled it; i < num_mx. */
const char *mta_sts_policy_mx(const struct mta_sts_policy *p, size_t i);

/* mta_sts_mode_name: "none", "testing", "enforce". */
const char *mta_sts_mode_name(enum mta_sts_mode mode);

/* ---- the TXT record (§3.1) ---- */

enum mta_sts_txt {
  MTA_STS_TXT_FOUND,   /* exactly one STSv1 record, valid: its id out */
  MTA_STS_TXT_NONE,    /* no record begins with "v=STSv1;" */
  MTA_STS_TXT_INVALID, /* more than one, or the one is malformed */
};

/* mta_sts_txt_is_sts: 1 if a record (its character-strings
 * concatenated) begins with "v=STSv1", optional blanks, ";" (§3.1:
 * others are discarded). */
int mta_sts_txt_is_sts(const uint8_t *rec, size_t rec_len);

/* mta_sts_txt_parse reads one record: "v=STSv1" first, then fields
 * separated by ";" with optional blanks around, a ";" and blanks allowed
 * at the end; exactly one "id=" (1..MTA_STS_MAX_ID alphanumerics); extension
 * fields name=value are checked for syntax and ignored. Returns 0 and the
 * id (NUL-terminated) in out_id, or -1 with a reason in err. */
int mta_sts_txt_parse(char out_id[MTA_STS_MAX_ID + 1], char *err,
                      size_t err_len, const uint8_t *rec, size_t rec_len);

/* mta_sts_txt_find picks the record from a TXT RRset (the answer of
 * _mta-sts.<domain>; RRs of other types are skipped). out_id as above;
 * err says why on MTA_STS_TXT_NONE and MTA_STS_TXT_INVALID. */
enum mta_sts_txt mta_sts_txt_find(char out_id[MTA_STS_MAX_ID + 1], char *err,
                                  size_t err_len, const struct dns_rr *rrs,
                                  size_t num_rrs);

/* ---- the policy file (§3.2) ---- */

/* mta_sts_policy_parse reads a whole policy file: lines end in LF or
 * CRLF (the last one may lack it), each is "key:" blanks value blanks;
 * version ("STSv1"), mode and max_age exactly once; mx one or more times
 * (none allowed with mode none), each ["*."] followed by an LDH domain;
 * other keys are checked for syntax and ignored. No empty lines but a
 * final line end. Returns 0, or -1 with "line N: reason" in err (out is
 * then unspecified). */
int mta_sts_policy_parse(struct mta_sts_policy *out, char *err, size_t err_len,
                         const uint8_t *in, size_t in_len);

/* ---- MX matching (§4.1) ---- */

/* mta_sts_mx_match: 1 if host matches one of the policy's mx patterns:
 * equal, or "*.rest" where host is one label followed by ".rest".
 * ASCII case-insensitive; a trailing dot on either side is ignored. */
int mta_sts_mx_match(const struct mta_sts_policy *p, const char *host);

/* mta_sts_pattern_match: the same for one pattern. */
int mta_sts_pattern_match(const char *pattern, const char *host);

/* mta_sts_domain_valid: 1 if domain (a trailing dot allowed) is an LDH
 * host name of at most MTA_STS_MAX_NAME octets: safe to put into
 * "_mta-sts.<domain>", "mta-sts.<domain>" and an HTTP Host field. */
int mta_sts_domain_valid(const char *domain);

/* ---- the cache (§5.1) ---- */

/* What the cache holds for one policy domain. */
struct mta_sts_cached {
  char id[MTA_STS_MAX_ID + 1];
  struct mta_sts_policy policy;
  int64_t fetched_at; /* when the policy was fetched */
  int64_t expires_at; /* fetched_at + max_age: usable while now < this */
};

struct mta_sts_cache_stats {
  size_t entries;
  uint64_t hits, misses, evictions;
};

struct mta_sts_cache;

/* mta_sts_cache_new: a cache of at most max_entries domains (0:
 * MTA_STS_CACHE_DEFAULT_MAX; capped at MTA_STS_CACHE_MAX_MAX); the least
 * recently used is evicted for room. NULL if out of memory. */
struct mta_sts_cache *mta_sts_cache_new(size_t max_entries);
void mta_sts_cache_free(struct mta_sts_cache *c); /* NULL ok */

/* mta_sts_cache_get: 1 and a copy of the domain's policy in *out if one
 * is cached and now < expires_at; 0 otherwise. An expired policy is
 * dropped (§5.1: never used past max_age); its entry stays if it still
 * records a failed fetch. Domains compare case-insensitively, a
 * trailing dot ignored. */
int mta_sts_cache_get(struct mta_sts_cache *c, struct mta_sts_cached *out,
                      const char *domain, int64_t now);

/* mta_sts_cache_put stores a policy just fetched for (domain, id): it
 * replaces the domain's previous one and expires at now + max_age
 * (max_age 0: never used from the cache). Clears a failure noted for
 * the domain. 0, or -1 out of memory or a domain that is too long. */
int mta_sts_cache_put(struct mta_sts_cache *c, const char *domain,
                      const char *id, const struct mta_sts_policy *policy,
                      int64_t now);

/* mta_sts_cache_note_failure records that fetching id's policy for
 * domain failed at now; the cached policy, if any, stays (§5.1: it is
 * used until it expires). mta_sts_cache_may_fetch is then 0 for that id
 * until now + MTA_STS_RETRY_AFTER (§3.3). */
void mta_sts_cache_note_failure(struct mta_sts_cache *c, const char *domain,
                                const char *id, int64_t now);

/* mta_sts_cache_may_fetch: 1 unless a fetch of (domain, id) failed less
 * than MTA_STS_RETRY_AFTER seconds before now. */
int mta_sts_cache_may_fetch(struct mta_sts_cache *c, const char *domain,
                            const char *id, int64_t now);

void mta_sts_cache_get_stats(struct mta_sts_cache *c,
                             struct mta_sts_cache_stats *out);

#endif
