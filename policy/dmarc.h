/* policy/dmarc.h — DMARC (RFC 7489): records, organisational domains,
 * alignment, the policy to apply, and aggregate reports.
 *
 * Owns: the DMARC record parser (§6.3: v=DMARC1 first, p required in a
 * record found at the From domain — a record without a valid p is
 * treated per §6.6.3 — unknown tags ignored, bad values of known tags
 * handled as the RFC says), the Public Suffix List (Debian's publicsuffix
 * package: /usr/share/publicsuffix/public_suffix_list.dat) for
 * organisational domains (§3.2), identifier alignment (§3.1, relaxed and
 * strict, for SPF and DKIM), the evaluation of one message (§6.6) into a
 * result and a disposition (p, sp, pct), and the aggregate report
 * document (§7.2, Appendix C schema) with the external destination check
 * (§7.1) names.
 *
 * Never does I/O except reading the PSL file: the caller (daemon wiring)
 * looks up _dmarc.<From domain> and, when there is none,
 * _dmarc.<organisational domain>, and hands the TXT answers in.
 *
 * Thread: a struct dmarc_psl is immutable after load and shared; the rest
 * is plain data. */
#ifndef POSTSEAL_POLICY_DMARC_H
#define POSTSEAL_POLICY_DMARC_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define DMARC_MAX_RECORD 4096 /* a TXT record, character-strings joined */
#define DMARC_MAX_URIS 8      /* rua= / ruf= URIs kept */
#define DMARC_MAX_URI 512
#define DMARC_MAX_DKIM 16 /* DKIM results considered per message */
#define DMARC_PSL_DEFAULT "/usr/share/publicsuffix/public_suffix_list.dat"

enum dmarc_policy { DMARC_P_NONE, DMARC_P_QUARANTINE, DMARC_P_REJECT };

/* "none", "quarantine", "reject". */
const char *dmarc_policy_name(enum dmarc_policy p);

struct dmarc_record {
  enum dmarc_policy p;
  enum dmarc_policy sp; /* = p when absent */
  int has_sp;
  unsigned pct;     /* 0..100, default 100 */
  int adkim_strict; /* adkim=s */
  int aspf_strict;  /* aspf=s */
  unsigned ri;      /* report interval, default 86400 */
  char fo[16];      /* failure reporting options, default "0" */
  size_t num_rua, num_ruf;
  char rua[DMARC_MAX_URIS][DMARC_MAX_URI]; /* "mailto:a@b" (size suffix
                                              "!10m" kept separately) */
  uint64_t rua_max[DMARC_MAX_URIS];        /* size limit bytes; 0 none */
  char ruf[DMARC_MAX_URIS][DMARC_MAX_URI];
  int p_invalid; /* p or sp was missing/invalid: acting as p=none */
};

/* dmarc_record_parse: 0 and *out filled; -1 with the reason when the text
 * is not a usable DMARC record (no "v=DMARC1" first, a syntax error, p
 * missing or invalid). §6.6.3: a record whose p (or sp) is missing or
 * invalid but which has a valid rua URI is returned (0) as p=none with
 * p_invalid set. Unknown tags are ignored; a bad pct is 100 (noted).
 * A syntax error is a malformed tag-list (RFC 6376 §3.2: a tag without
 * "=", a bad tag name, a known tag given twice, an octet outside
 * printable ASCII); a bad value of a known tag other than p/sp falls back
 * to its default (§6.3: "discarded in favor of default values"), a bad
 * rua/ruf URI is dropped. Tag names and keywords are case-insensitive
 * (RFC 5234 strings), "DMARC1" is not (%x44.4d.41.52.43.31). On 0, err
 * holds what was ignored ("" when nothing was). At most DMARC_MAX_RECORD
 * octets. */
int dmarc_record_parse(const char *txt, size_t len, struct dmarc_record *out,
                       char *err, size_t err_len);

/* dmarc_is_record: 1 if the text starts like a DMARC record ("v=DMARC1"
 * with optional spaces and then ";" or the end), for record selection
 * (§6.6.3: several such records = none). */
int dmarc_is_record(const uint8_t *txt, size_t len);

/* ---- organisational domains (Public Suffix List) ---- */

struct dmarc_psl;

/* dmarc_psl_load reads the PSL (ICANN and private sections, wildcards and
 * exceptions). NULL + reason. */
struct dmarc_psl *dmarc_psl_load(const char *path, char *err, size_t err_len);
/* Rules in U-labels (UTF-8) are kept twice: as written (ASCII letters
 * lowered) and as A-labels (RFC 3492 Punycode, "xn--"), so both forms of
 * a domain find them. A malformed line fails the load with path:line. */
void dmarc_psl_free(struct dmarc_psl *p);

/* dmarc_org_domain writes the organisational domain of `domain` (the
 * public suffix plus one label, lower case, no trailing dot) into out.
 * A domain that is itself a public suffix is its own organisational
 * domain. Returns 0, or -1 (not a domain, or out too small). p NULL: only
 * the PSL default rule "*" (the TLD is the public suffix). */
int dmarc_org_domain(const struct dmarc_psl *p, const char *domain, char *out,
                     size_t out_len);

/* dmarc_aligned: 1 if `a` and `b` align: equal (strict), or with the same
 * organisational domain (relaxed). Case-insensitive, trailing dots
 * ignored. p NULL (no PSL): relaxed alignment is equality or one being a
 * subdomain of the other, never two siblings under a guessed suffix. */
int dmarc_aligned(const struct dmarc_psl *p, const char *a, const char *b,
                  int strict);

/* ---- one message ---- */

enum dmarc_result {
  DMARC_RESULT_NONE, /* no policy record */
  DMARC_RESULT_PASS,
  DMARC_RESULT_FAIL,
  DMARC_RESULT_TEMPERROR, /* the record lookup failed for now */
  DMARC_RESULT_PERMERROR, /* From unusable: none, several, several
                             addresses, no domain */
};

/* "none", "pass", "fail", "temperror", "permerror". */
const char *dmarc_result_name(enum dmarc_result r);

/* Authentication results in: simple strings so the wiring can fill them
 * from SPF (policy/spf.h) and DKIM (crypto/dkim.h) without this module
 * depending on either. */
struct dmarc_auth {
  const char *spf_domain; /* the MAIL FROM domain checked (or HELO's when
                             the sender was null), "" if none */
  int spf_pass;           /* SPF result pass */
  const char *spf_result; /* its name, for the report */
  size_t num_dkim;
  struct {
    const char *domain; /* d= */
    const char *selector;
    int pass;
    const char *result; /* its name, for the report */
  } dkim[DMARC_MAX_DKIM];
};

/* The record lookup the caller made. */
struct dmarc_lookup {
  enum {
    DMARC_LOOKUP_FOUND,    /* rec valid */
    DMARC_LOOKUP_NONE,     /* no (single) record at From nor org domain */
    DMARC_LOOKUP_TEMPFAIL, /* a lookup failed for now */
  } status;
  const struct dmarc_record *rec;
  int at_org; /* the record came from the organisational domain (then sp
                 applies, §6.6.3) */
};

struct dmarc_outcome {
  enum dmarc_result result;
  enum dmarc_policy policy;      /* the published p or sp that applied */
  enum dmarc_policy disposition; /* what to do: policy, or none when pct
                                    sampling exempted the message or the
                                    result is not fail */
  int sampled_out;               /* pct < 100 and this message not taken */
  int spf_aligned, dkim_aligned; /* aligned passes found */
  char reason[128];              /* for logs and A-R comments */
};

/* dmarc_from_domain finds the RFC 5322.From domain of a message's header
 * block (§6.6.1): exactly one From field with exactly one address with a
 * domain, else -1 with the reason ("no From field", "2 From fields",
 * "From with 2 addresses", "From without a domain"). Handles display
 * names, quoted strings, comments, group syntax, folding. */
int dmarc_from_domain(const uint8_t *msg, size_t len, char *out, size_t out_len,
                      char *why, size_t why_len);

/* dmarc_evaluate applies §6.6: result from alignment of the passing SPF
 * and DKIM identifiers with from_domain; disposition from the record's p
 * (or sp when at_org) and pct, with sample in [0, 100) drawn by the
 * caller (pct applies when sample < pct). from_domain NULL: permerror. */
void dmarc_evaluate(const struct dmarc_psl *psl, const char *from_domain,
                    const struct dmarc_auth *auth,
                    const struct dmarc_lookup *lookup, unsigned sample,
                    struct dmarc_outcome *out);

/* ---- aggregate reports (§7.2, Appendix C) ---- */

struct dmarc_report_row {
  char source_ip[64]; /* text form */
  uint64_t count;
  enum dmarc_policy disposition;           /* what we did */
  int dkim_aligned_pass, spf_aligned_pass; /* policy_evaluated */
  char header_from[256];
  char envelope_from[256]; /* SPF domain, may be "" */
  /* auth_results: the raw results (up to 4 DKIM and the SPF one). */
  size_t num_dkim;
  struct {
    char domain[256];
    char selector[64];
    char result[16];
  } dkim[4];
  char spf_domain[256];
  char spf_scope[8]; /* "mfrom" or "helo" (the schema requires it); ""
                        is "mfrom" */
  char spf_result[16];
};

struct dmarc_report_meta {
  const char *org_name;              /* the reporter, e.g. our host name */
  const char *email;                 /* reporter's contact address */
  const char *report_id;             /* unique per report */
  int64_t begin, end;                /* seconds since the epoch */
  const char *domain;                /* the policy domain reported on */
  const struct dmarc_record *policy; /* as published */
};

/* dmarc_report_xml appends the aggregate report document (XML, the
 * Appendix C schema: feedback/version/report_metadata/policy_published/
 * record+), every text escaped (octets that are not UTF-8 or are
 * controls become "?"). What the schema requires is always written:
 * policy_published has adkim, aspf, p, sp, pct and fo; identifiers has
 * envelope_from (empty when unknown); each spf result has its scope.
 * source_ip is rewritten in the one form the schema's pattern accepts:
 * dotted IPv4 (also for ::ffff:a.b.c.d), or IPv6 as eight groups without
 * "::". DKIM and SPF results must be the schema's names (RFC 8601
 * aliases "hardfail", "unknown", "error" are mapped; "" is "none").
 * Returns 0, or -1 with nothing appended: no rows (the schema wants one
 * record), a missing field, an address or result that is not one,
 * memory. */
int dmarc_report_xml(const struct dmarc_report_meta *meta,
                     const struct dmarc_report_row *rows, size_t num_rows,
                     struct buf *out);

/* dmarc_report_filename: "receiver!policy-domain!begin!end.xml.gz"
 * (§7.2.1.1) into out. */
int dmarc_report_filename(const struct dmarc_report_meta *meta, char *out,
                          size_t out_len);

/* dmarc_rua_mailto: from a rua URI "mailto:addr[!size]" the address, or
 * -1 (other schemes are not supported). */
int dmarc_rua_mailto(const char *uri, char *addr, size_t addr_len);

/* dmarc_external_check_name: the name to look up (TXT, a record starting
 * "v=DMARC1") before sending reports for policy_domain to an address in
 * another organisational domain (§7.1):
 * "<policy_domain>._report._dmarc.<rua domain>"; 0, or -1 when the
 * domains share an organisational domain (no check needed: *out = ""),
 * or -2 when a domain is not one or the name does not fit (253 octets,
 * out_len): then the reports must not be sent (*out = ""). */
int dmarc_external_check_name(const struct dmarc_psl *p,
                              const char *policy_domain, const char *rua_domain,
                              char *out, size_t out_len);

#endif
