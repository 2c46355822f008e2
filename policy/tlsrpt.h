/* policy/tlsrpt.h — SMTP TLS Reporting (RFC 8460): the _smtp._tls TXT
 * record (§3), the aggregate of outbound TLS session outcomes per policy
 * domain (§4), the JSON report (§4.4), and the report as a message: gzip
 * (§5.3), MIME multipart/report with report-type "tlsrpt" (§5.3).
 *
 * Owns: an aggregate owns its domains, policies and failure rows (heap);
 * everything else here is pure: bytes in, a struct or bytes out, no
 * socket, no DNS, no clock (times are passed in, seconds since the Unix
 * epoch, UTC). core/daemon/tlsrpt.c records sessions, looks the record up
 * and queues the reports.
 *
 * Thread: an aggregate belongs to one thread at a time (no lock inside);
 * the other functions may run on any thread.
 *
 * Pointers: strings handed to tlsrpt_agg_add are copied. A struct
 * tlsrpt_record holds its URIs by value.
 *
 * Limits (checked before the data is used): a record is at most
 * TLSRPT_MAX_RECORD octets with at most TLSRPT_MAX_URIS URIs kept (more
 * are counted, not kept), each at most TLSRPT_MAX_URI octets; an
 * aggregate holds at most limits.max_domains domains, TLSRPT_MAX_POLICIES
 * policies per domain and limits.max_failure_rows failure-detail rows per
 * domain; what does not fit is counted (struct tlsrpt_agg_stats), never
 * kept. Policy strings are at most TLSRPT_MAX_STRINGS of at most
 * TLSRPT_MAX_STRING octets (longer ones are cut), host and address
 * strings TLSRPT_MAX_NAME, a failure reason TLSRPT_MAX_REASON. */
#ifndef POSTSEAL_POLICY_TLSRPT_H
#define POSTSEAL_POLICY_TLSRPT_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "proto/dns_msg.h"

#define TLSRPT_MAX_RECORD 4096 /* a TXT record, character-strings joined */
#define TLSRPT_MAX_URIS 8      /* rua URIs kept per record */
#define TLSRPT_MAX_URI 512     /* one URI, as written */
#define TLSRPT_MAX_DOMAIN 253  /* a policy domain, no trailing dot */
#define TLSRPT_MAX_POLICIES 8  /* distinct policies per domain and period */
#define TLSRPT_MAX_STRINGS 80  /* policy-string or mx-host entries */
#define TLSRPT_MAX_STRING 2048 /* one entry (a TLSA record in hex) */
#define TLSRPT_MAX_NAME 255    /* an MX host name or an address */
#define TLSRPT_MAX_REASON 255  /* failure-reason-code */
#define TLSRPT_MAX_REPORT_ID 300
#define TLSRPT_ERR_LEN 160
#define TLSRPT_DEFAULT_MAX_DOMAINS 10000
#define TLSRPT_DEFAULT_MAX_FAILURE_ROWS 100

/* ---- the TXT record (§3) ---- */

enum tlsrpt_uri_kind {
  TLSRPT_URI_MAILTO, /* text: the mailbox, percent-decoded, checked */
  TLSRPT_URI_HTTPS,  /* text: the URI as written */
};

struct tlsrpt_uri {
  enum tlsrpt_uri_kind kind;
  char text[TLSRPT_MAX_URI + 1];
};

struct tlsrpt_record {
  size_t num_uris;
  struct tlsrpt_uri uris[TLSRPT_MAX_URIS];
  /* URIs well formed but not kept: another scheme, a mailto that is not
   * one plain ASCII mailbox, or past TLSRPT_MAX_URIS. */
  size_t num_ignored;
};

enum tlsrpt_txt {
  TLSRPT_TXT_FOUND,   /* exactly one TLSRPTv1 record, valid */
  TLSRPT_TXT_NONE,    /* no record begins with "v=TLSRPTv1;" */
  TLSRPT_TXT_INVALID, /* more than one, or the one is malformed */
};

/* tlsrpt_txt_is_tlsrpt: 1 if a record begins with "v=TLSRPTv1", optional
 * blanks, ";" (§3: other records are discarded). */
int tlsrpt_txt_is_tlsrpt(const uint8_t *rec, size_t rec_len);

/* tlsrpt_txt_parse reads one record (§3):
 *   tlsrpt-record = %s"v=TLSRPTv1" 1*(field-delim tlsrpt-field)
 *                   [field-delim]
 *   field-delim   = *WSP ";" *WSP
 *   tlsrpt-rua    = %s"rua=" tlsrpt-uri *(*WSP "," *WSP tlsrpt-uri)
 *   tlsrpt-extension = ext-name "=" ext-value
 * At least one rua field (more are joined); a URI is visible ASCII up to
 * ",", ";" or a blank, with a scheme, and no "!" (§3: "," and "!" are
 * percent-encoded). mailto: and https: URIs are kept; others counted.
 * Returns 0 and the record in *out, or -1 with a reason in err. */
int tlsrpt_txt_parse(struct tlsrpt_record *out, char *err, size_t err_len,
                     const uint8_t *rec, size_t rec_len);

/* tlsrpt_txt_find picks the record from the TXT RRset of
 * _smtp._tls.<domain> (RRs of other types are skipped). */
enum tlsrpt_txt tlsrpt_txt_find(struct tlsrpt_record *out, char *err,
                                size_t err_len, const struct dns_rr *rrs,
                                size_t num_rrs);

/* ---- sessions and the aggregate (§4) ---- */

enum tlsrpt_policy_type {
  TLSRPT_POLICY_NONE, /* "no-policy-found" */
  TLSRPT_POLICY_STS,  /* "sts": an MTA-STS policy applied */
  TLSRPT_POLICY_TLSA, /* "tlsa": DANE */
};

/* §4.3 result types (the IANA "STARTTLS Validation Result Types"). */
enum tlsrpt_result {
  TLSRPT_STARTTLS_NOT_SUPPORTED,
  TLSRPT_CERT_HOST_MISMATCH,
  TLSRPT_CERT_EXPIRED,
  TLSRPT_CERT_NOT_TRUSTED,
  TLSRPT_VALIDATION_FAILURE,
  TLSRPT_TLSA_INVALID,
  TLSRPT_DNSSEC_INVALID,
  TLSRPT_DANE_REQUIRED,
  TLSRPT_STS_POLICY_FETCH_ERROR,
  TLSRPT_STS_POLICY_INVALID,
  TLSRPT_STS_WEBPKI_INVALID,
  TLSRPT_RESULT_COUNT,
};

/* tlsrpt_result_name: "starttls-not-supported", ...; "?" out of range. */
const char *tlsrpt_result_name(enum tlsrpt_result r);
/* tlsrpt_policy_type_name: "no-policy-found", "sts", "tlsa". */
const char *tlsrpt_policy_type_name(enum tlsrpt_policy_type t);

/* tlsrpt_classify_verify maps a certificate verifier's reason (crypto/
 * tls.h tls_verify_error: "name mismatch: ...", "certificate has
 * expired", an X509 reason) to a result type; dane: the check was
 * against TLSA records. */
enum tlsrpt_result tlsrpt_classify_verify(const char *why, int dane);

/* The policy a session ran under (§4.3 "policy"). Strings are
 * NUL-terminated; NULL arrays with a count of 0 are fine. */
struct tlsrpt_policy {
  enum tlsrpt_policy_type type;
  const char *const *strings; /* policy-string: sts lines, TLSA records */
  size_t num_strings;
  const char *const *mx_hosts; /* mx-host: sts patterns, the TLSA host */
  size_t num_mx_hosts;
};

/* A failed session's details (§4.3 "failure-details"); NULL or ""
 * omits a field. */
struct tlsrpt_failure {
  enum tlsrpt_result result;
  const char *sending_ip;
  const char *receiving_mx;
  const char *receiving_ip;
  const char *reason; /* failure-reason-code: our reply text, say */
};

struct tlsrpt_limits {
  size_t max_domains;      /* 0: TLSRPT_DEFAULT_MAX_DOMAINS */
  size_t max_failure_rows; /* per domain; 0: TLSRPT_DEFAULT_MAX_FAILURE_ROWS */
};

/* What an aggregate could not keep, in sessions. */
struct tlsrpt_agg_stats {
  size_t num_domains;
  uint64_t dropped_domain; /* sessions of a domain past max_domains */
  uint64_t dropped_policy; /* sessions of a policy past TLSRPT_MAX_POLICIES */
  uint64_t dropped_rows;   /* failed sessions counted without their row */
  uint64_t dropped_nomem;  /* sessions lost to an allocation failure */
};

struct tlsrpt_agg;

/* tlsrpt_agg_new: an empty aggregate for [start_s, end_s). NULL if out
 * of memory. */
struct tlsrpt_agg *tlsrpt_agg_new(const struct tlsrpt_limits *limits,
                                  int64_t start_s, int64_t end_s);
void tlsrpt_agg_free(struct tlsrpt_agg *a); /* NULL ok */

/* tlsrpt_agg_add counts one session of domain (case-insensitive, a
 * trailing dot ignored) under policy p: successful when f is NULL, else
 * failed with details f (rows with equal details share a count).
 * Returns 0 (counted; its row may have been dropped, see stats) or -1
 * (not counted: a limit, a bad domain, out of memory). */
int tlsrpt_agg_add(struct tlsrpt_agg *a, const char *domain,
                   const struct tlsrpt_policy *p,
                   const struct tlsrpt_failure *f);

/* tlsrpt_agg_merge adds every count of src into dst, under dst's limits
 * (what does not fit is counted in dst's stats); dst's period widens to
 * cover src's. Returns 0, or -1 if some of src was lost to memory. */
int tlsrpt_agg_merge(struct tlsrpt_agg *dst, const struct tlsrpt_agg *src);

void tlsrpt_agg_get_stats(const struct tlsrpt_agg *a,
                          struct tlsrpt_agg_stats *out);
void tlsrpt_agg_period(const struct tlsrpt_agg *a, int64_t *out_start_s,
                       int64_t *out_end_s);
/* Domains in the order they were first seen; i < num_domains. */
size_t tlsrpt_agg_num_domains(const struct tlsrpt_agg *a);
const char *tlsrpt_agg_domain(const struct tlsrpt_agg *a, size_t i);
/* tlsrpt_agg_domain_sessions: domain i's sessions, successful and failed. */
void tlsrpt_agg_domain_sessions(const struct tlsrpt_agg *a, size_t i,
                                uint64_t *out_ok, uint64_t *out_failed);

/* ---- the report (§4.4) and its message (§5) ---- */

struct tlsrpt_report_meta {
  const char *organization; /* organization-name: our host name */
  const char *contact;      /* contact-info: an address */
  const char *report_id;    /* unique, at most TLSRPT_MAX_REPORT_ID */
};

/* tlsrpt_report_json appends the JSON report of domain i (§4.4):
 * organization-name, date-range (RFC 3339, UTC: the period's start and
 * its last second), contact-info, report-id, and one policies[] entry
 * per policy with its summary and failure-details. Strings are escaped;
 * octets that are not UTF-8 become "?". Returns 0, or -1 (memory). */
int tlsrpt_report_json(struct buf *out, const struct tlsrpt_agg *a, size_t i,
                       const struct tlsrpt_report_meta *meta);

/* tlsrpt_gzip appends in as one gzip member (RFC 1952, compressed by
 * zlib) for the application/tlsrpt+gzip part (RFC 8460 §5.3). mtime:
 * seconds, for the header. 0 or -1. Inputs are reports (bounded by the
 * aggregate's limits), far below 4 GiB. */
int tlsrpt_gzip(struct buf *out, const uint8_t *in, size_t in_len,
                int64_t mtime);

/* The report message (§5.3). Every string is checked by
 * tlsrpt_message_build: host names and the domain LDH, addresses plain
 * ASCII without blanks, "<", ">" or quotes; report_id and unique as
 * described. */
struct tlsrpt_message {
  const char *submitter;    /* our host name: Submitter, the filename */
  const char *from;         /* From: (the contact address) */
  const char *domain;       /* the policy domain */
  const char *report_id;    /* atext and dots, one "@" */
  const char *unique;       /* filename unique-id: 1*(ALPHA / DIGIT) */
  const char *const *rcpts; /* To: the rua mailboxes */
  size_t num_rcpts;         /* 1.. */
  int64_t now_s;            /* Date: */
  int64_t start_s, end_s;   /* the period, for the filename and text */
  const uint8_t *report_gz; /* the gzipped JSON report */
  size_t report_gz_len;
};

/* tlsrpt_message_build appends an RFC 5322 message (CRLF lines, none
 * over 998 octets; the Subject and the file name may pass 78):
 *   From, To, Subject "Report Domain: D Submitter: S Report-ID: <ID>",
 *   Date, Message-ID <ID>, MIME-Version, TLS-Report-Domain,
 *   TLS-Report-Submitter, TLS-Required: No (RFC 8689 §4.1: deliver the
 *   report even where TLS fails, §5.3 of RFC 8460), Auto-Submitted,
 *   Content-Type: multipart/report; report-type="tlsrpt"
 * with a text/plain part and the application/tlsrpt+gzip part in base64
 * named "S!D!start!end!unique.json.gz" (§5.1). Returns 0, or -1 with
 * nothing appended (a bad field, memory). */
int tlsrpt_message_build(struct buf *out, const struct tlsrpt_message *m);

#endif
