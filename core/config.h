/* core/config.h — postseald's configuration: one YAML file, built-in
 * defaults, environment overrides.
 *
 * Owns: struct config and its loading/validation. config_load() reads the
 * YAML file (libyaml), rejects unknown keys and bad values with
 * "FILE:LINE: message", then applies POSTSEAL_* environment variables (an
 * error there reads "env POSTSEAL_X: message"). Without a file the built-in
 * defaults work on one machine: listeners on loopback, spool under ./spool.
 * Every key is documented in docs/configuration.md.
 *
 * Thread: loaded on the main thread; the result is immutable and shared
 * read-only by the loops (SIGHUP loads a new one and swaps it in). */
#ifndef POSTSEAL_CORE_CONFIG_H
#define POSTSEAL_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "core/netaddr.h"
#include "core/route.h"

#define CONFIG_MAX_LIST 256 /* entries in any list (networks, domains) */

struct config_listen {
  int enabled;    /* 0 if the listener is switched off ("" in the file) */
  char host[256]; /* "" = all addresses */
  uint16_t port;
  char text[300]; /* as written, for logs */
};

enum config_log_format { CONFIG_LOG_PLAIN, CONFIG_LOG_JSON };

/* Outbound TLS per destination (Postfix's smtp_tls_security_level):
 * none: never STARTTLS; may: opportunistic (plaintext if it fails);
 * encrypt: TLS required, certificate not checked; verify: TLS with a
 * certificate that chains to tls.ca_file and names the next hop; dane:
 * RFC 7672 (TLSA from a validating resolver), else may. */
enum config_tls_level {
  CONFIG_TLS_NONE,
  CONFIG_TLS_MAY,
  CONFIG_TLS_ENCRYPT,
  CONFIG_TLS_VERIFY,
  CONFIG_TLS_DANE,
};

/* One tls.policies entry: "DOMAIN LEVEL"; DOMAIN ".example.com" matches
 * subdomains, "*" everything. */
struct config_tls_policy {
  char domain[256];
  enum config_tls_level level;
};

/* One dkim.keys entry: "DOMAIN SELECTOR KEY_FILE [NOT_BEFORE]". */
struct config_dkim_key {
  char domain[256];   /* lower case, no trailing dot */
  char selector[256]; /* RFC 6376 selector: dot-separated labels */
  char key_file[1024];
  int64_t not_before; /* seconds since the epoch it starts to sign; 0 =
                         from the start */
};

#define CONFIG_MAX_DKIM_HEADERS 64 /* dkim.headers and dkim.oversign */

/* S/MIME (crypto/cms.h, crypto/smime.h, core/daemon/smimeglue.c). WHO is
 * an address ("alice@example.com") or a domain ("example.com", which
 * covers its subdomains too); the most specific entry wins. */
enum config_smime_policy {
  CONFIG_SMIME_NONE = 0,    /* never encrypt */
  CONFIG_SMIME_IF_POSSIBLE, /* encrypt when every recipient has a cert */
  CONFIG_SMIME_REQUIRED,    /* refuse (550 5.7.1) mail that cannot be */
};
/* Values as enum cms_cipher / enum cms_digest (core cannot see them). */
enum config_smime_cipher {
  CONFIG_SMIME_AES256_GCM = 0,
  CONFIG_SMIME_AES128_GCM,
  CONFIG_SMIME_AES256_CBC,
  CONFIG_SMIME_AES128_CBC,
};

/* One smime.sign entry: "WHO KEY_FILE CERT_FILE" (the certificate file
 * may hold the chain after the leaf). */
struct config_smime_signer {
  char who[512];
  char key_file[1024];
  char cert_file[1024];
};

/* One smime.encrypt_policies entry: "WHO POLICY". */
struct config_smime_policy_entry {
  char who[512];
  enum config_smime_policy policy;
};

/* One throttle.rates entry: "DESTINATION RATE/PERIOD": at most `rate`
 * messages to the destination domain in any `period_ms`, across every
 * replica sharing throttle.redis (core/daemon/throttle.c). DESTINATION:
 * a domain, ".domain" (its subdomains) or "*" (any other); each matching
 * recipient domain gets its own window. */
struct config_throttle_rate {
  char domain[256];
  unsigned rate;      /* 1..CONFIG_MAX_THROTTLE_RATE */
  unsigned period_ms; /* 1 ms .. 1 day */
};
#define CONFIG_MAX_THROTTLE_RATE 1000000

struct config {
  char *path;       /* file loaded, or NULL for defaults */
  char *hostname;   /* default: gethostname() */
  unsigned threads; /* default: online CPUs */

  struct config_listen smtp;       /* default 127.0.0.1:2525 */
  struct config_listen submission; /* default 127.0.0.1:2587 */
  struct config_listen metrics;    /* default 127.0.0.1:9425 */
  /* Implicit TLS submission (RFC 8314, port 465); needs tls.cert_file.
   * Default "" (off). */
  struct config_listen submissions;

  char *spool_dir;           /* default "spool" */
  size_t spool_segment_size; /* rotate segments at this size: 64 MiB */
  size_t spool_prezero;      /* zeros laid ahead of records: 1 MiB; 0 off */
  char *relayhost;           /* "" = MX routing; "[host]:port" = no MX */
  enum config_log_format log_format;

  /* Relay access (policy/access.h): clients in mynetworks may relay; any
   * client may send to local_domains and relay_domains; open_relay must be
   * set explicitly (and is logged loudly) to relay for everyone. */
  struct cidr mynetworks[CONFIG_MAX_LIST]; /* default 127.0.0.0/8, ::1/128 */
  size_t num_mynetworks;
  char *local_domains[CONFIG_MAX_LIST]; /* default: "localhost" */
  size_t num_local_domains;
  char *relay_domains[CONFIG_MAX_LIST];
  size_t num_relay_domains;
  int open_relay; /* default 0 */

  /* Limits (RFC 5321 4.5.3.1 minimums are enforced as lower bounds). */
  size_t message_size_limit; /* default 10 MiB (SIZE) */
  size_t recipient_limit;    /* default 100 */
  size_t header_size_limit;  /* default 1 MiB */
  unsigned error_limit;      /* default 20 */
  unsigned max_sessions;     /* per thread, default 10000 */

  /* Timeouts in seconds (RFC 5321 4.5.3.2). */
  unsigned timeout_command;  /* default 300 */
  unsigned timeout_data;     /* default 180 (per data block) */
  unsigned timeout_shutdown; /* default 10: SIGTERM grace for sessions */

  /* Outbound delivery (core/daemon/delivery.c). Times in seconds. */
  unsigned delivery_concurrency;             /* per thread, default 10 */
  unsigned delivery_messages_per_connection; /* default 100 */
  unsigned delivery_retry_initial;           /* default 60 */
  unsigned delivery_retry_max;               /* default 3600 */
  unsigned delivery_max_lifetime;            /* default 5 days */
  unsigned delivery_connect_timeout;         /* default 30 */
  unsigned delivery_dest_concurrency; /* per destination, per thread: 10 */
  unsigned delivery_dest_rate;        /* messages/s per destination, per thread;
                                         0 = no limit (default) */
  unsigned delivery_delay_warning;    /* seconds; 0 = none; default 14400 */

  /* Routing (core/route.h): transports maps recipient domains to a next
   * hop; local_domains without an entry go to local_transport. */
  struct route_entry *transports; /* CONFIG_MAX_LIST entries */
  size_t num_transports;
  struct route local_transport; /* default maildir:mail/%d/%u */
  char *local_transport_text;

  /* DNS (policy/dns.h): servers as "ip:port"; none = /etc/resolv.conf. */
  char *dns_servers[CONFIG_MAX_LIST];
  size_t num_dns_servers;
  unsigned dns_timeout_ms; /* per try, default 2000 */
  unsigned dns_tries;      /* default 3 */

  char *control_socket; /* default <spool_dir>/control; "" = none */

  /* TLS (crypto/tls.h). Inbound TLS needs a certificate: without one,
   * STARTTLS is not offered and the submissions listener cannot start. */
  char *tls_cert_file;   /* PEM chain; "" = no inbound TLS (default) */
  char *tls_key_file;    /* PEM key; set together with cert_file */
  char *tls_min_version; /* "1.2" (default) or "1.3" */
  char *tls_ca_file;     /* trust anchors for outbound verify: default
                            /etc/ssl/certs/ca-certificates.crt */
  enum config_tls_level tls_outbound; /* default MAY */
  struct config_tls_policy tls_policies[CONFIG_MAX_LIST];
  size_t num_tls_policies;

  /* AUTH (policy/auth.h) on the submission listeners. */
  char *auth_passwd_file;       /* "" = AUTH not offered (default) */
  unsigned auth_max_failures;   /* per client, default 5 */
  unsigned auth_failure_window; /* seconds, default 600 */
  int auth_sender_login_match;  /* MAIL FROM must be the user's: default 1 */
  int submission_require_auth;  /* default 1 */
  int submission_require_tls;   /* default 1 */
  int smtp_starttls;            /* offer STARTTLS on port 25: default 1 */
  int tls_mta_sts;              /* honour MTA-STS (RFC 8461): default 1 */
  unsigned tls_mta_sts_port;    /* HTTPS port of mta-sts.<domain>: 443 (a
                                   test knob; RFC 8461 fixes 443) */
  /* SMTP TLS Reporting (RFC 8460, core/daemon/tlsrpt.c). */
  int tls_reports;                 /* aggregate and send reports: 1 */
  unsigned tls_report_interval;    /* seconds per report: 86400 (a UTC
                                      day); small values are for tests */
  unsigned tls_report_max_domains; /* policy domains per period: 10000 */
  unsigned tls_report_max_failure_details; /* rows per domain: 100 */

  /* DKIM (crypto/dkim.h, core/daemon/dkim.c). Keys sign the mail of
   * clients that may relay (mynetworks, AUTH) whose From domain (or a
   * parent of it) has keys; per (domain, algorithm) the newest key whose
   * not_before has passed signs. Mail from other clients is verified. */
  struct config_dkim_key *dkim_keys; /* CONFIG_MAX_LIST entries */
  size_t num_dkim_keys;
  int dkim_sign;             /* default 1 */
  char *dkim_default_domain; /* "" = none (default): sign with this
                                domain's keys when From's has none */
  int dkim_hdr_relaxed;      /* c= header part: default 1 (relaxed) */
  int dkim_body_relaxed;     /* c= body part: default 1 (relaxed) */
  char *dkim_headers[CONFIG_MAX_DKIM_HEADERS]; /* none = built-in list */
  size_t num_dkim_headers;
  char *dkim_oversign[CONFIG_MAX_DKIM_HEADERS];
  size_t num_dkim_oversign;
  int dkim_oversign_set;               /* dkim.oversign given (even empty) */
  unsigned dkim_signature_ttl;         /* x= = t= + this; 0 = no x= (default) */
  int dkim_timestamp;                  /* t=: default 1 */
  int dkim_verify;                     /* verify inbound mail: default 1 */
  unsigned dkim_verify_max_signatures; /* default 5 */
  /* SPF (policy/spf.h) and DMARC (policy/dmarc.h) on mail from clients
   * that are not trusted (not mynetworks, not AUTH): the submission
   * listeners' authenticated users are never checked. */
  /* Listeners whose untrusted clients get the inbound checks (SPF, DKIM
   * verification, DMARC): bit 0 smtp, 1 submission, 2 submissions.
   * Default: smtp only (submission users authenticate). */
  unsigned inbound_checks;
  int spf_enabled;      /* check MAIL FROM (and HELO): default 1 */
  unsigned spf_timeout; /* seconds per check (RFC 7208 §4.6.4: at
                           least 20): default 20 */
  int dmarc_enabled;    /* default 1 */
  int dmarc_enforce;    /* apply reject/quarantine: default 1 */
  char *dmarc_psl_file; /* default DMARC_PSL_DEFAULT */
  /* "DOMAIN POLICY": a local override of the published policy for a From
   * domain (POLICY none, quarantine or reject). */
  char *dmarc_overrides[CONFIG_MAX_LIST];
  size_t num_dmarc_overrides;
  /* Aggregate reports (RFC 7489 §7.2) sent by the daemon. */
  int dmarc_reports;                 /* default 1 */
  unsigned dmarc_report_interval;    /* seconds per report: 86400 (a UTC
                                        day; small values are for tests) */
  unsigned dmarc_report_max_domains; /* policy domains per period: 10000 */
  char *dmarc_report_org_name;       /* org_name: "" = hostname */
  char *dmarc_report_email;          /* email: "" = postmaster@hostname */
  /* S/MIME gateway: outbound mail from trusted clients is signed for
   * the From address (smime.sign) and encrypted to the recipients whose
   * certificates are in smime.certs (per smime.encrypt, overridden per
   * From by smime.encrypt_policies); inbound signed mail is verified. */
  struct config_smime_signer *smime_signers; /* CONFIG_MAX_LIST entries */
  size_t num_smime_signers;
  struct config_smime_policy_entry *smime_policies;
  size_t num_smime_policies;
  enum config_smime_policy smime_encrypt; /* default none */
  char *smime_certs;           /* recipients' certificates: "" = none */
  char *smime_trust;           /* CA file to verify against: "" = none */
  unsigned smime_cipher;       /* enum config_smime_cipher: aes-256-gcm */
  unsigned smime_digest;       /* 0 sha256 (default), 1 sha384, 2 sha512 */
  int smime_opaque;            /* signed-data as application/pkcs7-mime
                                  instead of multipart/signed: default 0 */
  int smime_encrypt_to_sender; /* also for the From address: default 1 */
  int smime_verify;            /* verify inbound signatures: default 1 */
  /* Shared per-destination throttles (core/daemon/throttle.c). */
  char *throttle_redis; /* "host:port" of Redis; "" = off (default) */
  struct config_throttle_rate *throttle_rates; /* CONFIG_MAX_LIST entries */
  size_t num_throttle_rates;
  unsigned throttle_timeout_ms; /* a Redis answer later than this: local
                                   fallback; default 200 */
  char *throttle_key_prefix;    /* default "postseal:" */
  unsigned throttle_replicas;   /* the fallback's share: RATE / this;
                                   default 1 */
  /* Runtime objects the daemon builds from this configuration (TLS
   * contexts, the password table); freed with it by runtime_free. */
  void *runtime;
  void (*runtime_free)(void *runtime);
};

/* config_load reads `path` (NULL: defaults only), then the environment.
 * Returns a new config, or NULL with the reason in err. */
struct config *config_load(const char *path, char *err, size_t err_len);
void config_free(struct config *c);

/* config_is_local_domain / config_is_relay_domain: 1 if `domain` (case
 * insensitive, no trailing dot) is listed. */
int config_is_local_domain(const struct config *c, const char *domain);
int config_is_relay_domain(const struct config *c, const char *domain);

/* config_route: the next hop for a recipient domain: a transports entry,
 * else local_transport for a local domain, else relayhost (as
 * smtp:[host]:port or smtp:host), else MX routing ("smtp:"). */
void config_route(const struct config *c, const char *domain,
                  struct route *out);

/* config_smime_signer: the smime.sign entry for a From address (lower
 * case), the most specific one, or NULL. config_smime_policy: the
 * encryption policy for it (smime.encrypt_policies, else smime.encrypt). */
const struct config_smime_signer *config_smime_signer(const struct config *c,
                                                      const char *addr);
enum config_smime_policy config_smime_policy(const struct config *c,
                                             const char *addr);

/* config_tls_level: the outbound TLS level for a next-hop domain (the
 * recipient domain, or the relayhost's): the first tls.policies entry
 * that matches exactly, then the longest ".suffix", then "*", then
 * tls.outbound. */
enum config_tls_level config_tls_level(const struct config *c,
                                       const char *domain);
const char *config_tls_level_name(enum config_tls_level level);
/* config_throttle_rate: the throttle.rates entry for a destination
 * domain: exact, then the longest ".suffix", then "*"; NULL if none. */
const struct config_throttle_rate *config_throttle_rate(const struct config *c,
                                                        const char *domain);
/* config_parse_time reads "2026-12-01T00:00:00Z" (RFC 3339, UTC, "Z" or
 * "+00:00") or seconds since the epoch. Returns 0, or -1. */
int config_parse_time(const char *v, int64_t *out);

#endif
