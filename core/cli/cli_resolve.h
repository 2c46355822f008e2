/* core/cli/cli_resolve.h — `postseal resolve`: MX routes, host addresses,
 * TXT and TLSA records through policy/dns, as delivery sees them.
 *
 *   postseal resolve mx|host|txt|tlsa NAME [--server IP:PORT]...
 *                    [--timeout MS] [--tries N] [--repeat N] [--json]
 *
 * A poll() loop around one struct dns. --repeat N looks NAME up N times on
 * that one resolver (the first two at once, then one after another) and
 * prints its counters: the cache and the sharing of queries in flight at
 * work. Exit status (sysexits): 0 found, 67 (EX_NOUSER) not found, null
 * MX or a permanent failure, 75 (EX_TEMPFAIL) a temporary failure, 64
 * usage, 70 internal error. */
#ifndef POSTSEAL_CORE_CLI_RESOLVE_H
#define POSTSEAL_CORE_CLI_RESOLVE_H

/* cli_resolve runs the command; argv[0] is "resolve". */
int cli_resolve(int argc, char **argv);

#endif
