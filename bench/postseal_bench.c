/* bench/postseal_bench.c — `postseal-bench`: the load generator and sink.
 * One table of subcommands; each parses its own options (see bench.h). */
#include <stdio.h>
#include <string.h>

#include "bench/bench.h"

struct bench_cmd {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *summary;
};

static const struct bench_cmd bench_cmds[] = {
    {"send", bench_send_main,
     "drive concurrent SMTP sessions at a target, report rate and latency"},
    {"sink", bench_sink_main,
     "accept SMTP and count it, with configurable delays and failures"},
    {"tls-handshake", bench_tls_handshake_main,
     "TLS handshakes per second per core, in memory (crypto/tls.h)"},
    {"dkim-speed", bench_dkim_speed_main,
     "DKIM signs per second per core: raw RSA-2048, Ed25519, dual via "
     "crypto/dkim.h"},
    {"smime-speed", bench_smime_speed_main,
     "S/MIME messages per second per core: sign, encrypt to 1 and N, "
     "sign+encrypt via crypto/smime.h"},
};

static void bench_usage(FILE *f) {
  fprintf(f, "usage: postseal-bench COMMAND [options]  (COMMAND --help)\n");
  for (size_t i = 0; i < sizeof(bench_cmds) / sizeof(bench_cmds[0]); i++) {
    fprintf(f, "  %-13s %s\n", bench_cmds[i].name, bench_cmds[i].summary);
  }
}

int main(int argc, char **argv) {
  if (argc < 2) {
    bench_usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    bench_usage(stdout);
    return 0;
  }
  for (size_t i = 0; i < sizeof(bench_cmds) / sizeof(bench_cmds[0]); i++) {
    if (strcmp(argv[1], bench_cmds[i].name) == 0) {
      return bench_cmds[i].run(argc - 1, argv + 1);
    }
  }
  fprintf(stderr, "postseal-bench: unknown command %s\n", argv[1]);
  bench_usage(stderr);
  return 2;
}
