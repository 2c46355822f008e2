/* core/cli/cli_resolve.h — `postseal resolve`: MX routes, host addresses,
 * TXT and TLSA records through policy/dns, as delivery sees them, and a
 * domain's MTA-STS policy (RFC 8461).
 *
 *   postseal resolve mx|host|txt|tlsa NAME [--server IP:PORT]...
 *                    [--timeout MS] [--tries N] [--repeat N] [--json]
 *                    [-c CONFIG]
 *   postseal resolve mta-sts DOMAIN [--server IP:PORT]... [--timeout MS]
 *                    [--tries N] [--json] [-c CONFIG] [--ca-file PEM]
 *                    [--port N]
 *
 * A poll() loop around one struct dns. --repeat N looks NAME up N times on
 * that one resolver (the first two at once, then one after another) and
 * prints its counters: the cache and the sharing of queries in flight at
 * work. -c CONFIG takes dns.servers, dns.timeout_ms and dns.tries from
 * the daemon's configuration (the command line wins), and for mta-sts
 * tls.ca_file and tls.mta_sts_port.
 *
 * mta-sts looks up the _mta-sts.DOMAIN TXT record and prints its id, then
 * fetches https://mta-sts.DOMAIN/.well-known/mta-sts.txt (port --port,
 * else tls.mta_sts_port, else 443; PKIX against --ca-file, else
 * tls.ca_file, else the system bundle; no redirects; text/plain) and
 * prints the policy ("mode enforce", "max_age 86400", one "mx PATTERN"
 * line each). Failures go to stderr as one line.
 *
 * Exit status (sysexits): 0 found, 67 (EX_NOUSER) not found, null MX or a
 * permanent failure (mta-sts: no STSv1 record), 75 (EX_TEMPFAIL) a
 * temporary failure, 69 (EX_UNAVAILABLE) mta-sts: a record but no valid
 * policy fetched, 78 (EX_CONFIG) a configuration or CA file that does not
 * load, 64 usage, 70 internal error. */
#ifndef POSTSEAL_CORE_CLI_RESOLVE_H
#define POSTSEAL_CORE_CLI_RESOLVE_H

/* cli_resolve runs the command; argv[0] is "resolve". */
int cli_resolve(int argc, char **argv);

#endif
