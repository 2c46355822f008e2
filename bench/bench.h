/* bench/bench.h — what the postseal-bench subcommands share: their entry
 * points (called by postseal_bench.c's subcommand table), the monotonic
 * clock, target/listen address parsing, test messages and histogram
 * output.
 *
 * Each subcommand parses its own options, runs bounded in count and time,
 * and returns a process exit status (0 ok, 1 run failed, 2 usage). */
#ifndef POSTSEAL_BENCH_BENCH_H
#define POSTSEAL_BENCH_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "bench/hdr.h"
#include "core/buf.h"

/* Hard limits on a run, so a typo cannot load the machine for a day. */
#define BENCH_MAX_MESSAGES 10000000ull
#define BENCH_MAX_SECONDS 3600.0
#define BENCH_MAX_CONNECTIONS 20000
#define BENCH_MAX_SIZE (64u * 1024 * 1024)
#define BENCH_MAX_SIZES 16
/* Test messages: the From and Message-ID domain, the body line length
 * before CRLF. */
#define BENCH_TEXT_DOMAIN "example.org"
#define BENCH_TEXT_LINE 76
/* Latency histograms: microseconds, 1 µs .. 60 s, 1/128 resolution. */
#define BENCH_HDR_HIGHEST_US 60000000ull
#define BENCH_HDR_SUB_BITS 8

int bench_send_main(int argc, char **argv);
int bench_sink_main(int argc, char **argv);
int bench_tls_handshake_main(int argc, char **argv);
int bench_dkim_speed_main(int argc, char **argv);
int bench_smime_speed_main(int argc, char **argv);

/* bench_now_ns: CLOCK_MONOTONIC in nanoseconds. */
int64_t bench_now_ns(void);

/* bench_addr_parse turns "127.0.0.1:25" or "[::1]:25" into a socket
 * address (numeric hosts only: no DNS in a load tool). Returns 0 or -1. */
int bench_addr_parse(const char *text, struct sockaddr_storage *out,
                     socklen_t *out_len);

/* bench_text_message appends to out a message of exactly size octets:
 * the header fields a client writes (From bench@BENCH_TEXT_DOMAIN, a
 * Subject and Message-ID naming `name`), an empty line, then lines of up
 * to BENCH_TEXT_LINE octets cut from the non-empty `text` repeated.
 * Returns 0, or -1 when the header fields do not fit in size or an append
 * fails (out may then hold part of a message). */
int bench_text_message(struct buf *out, size_t size, const char *name,
                       const char *text);

/* bench_hdr_text prints "name count min p50 p90 p99 p99.9 max mean" (µs)
 * on one line; bench_hdr_json writes the same as a JSON object. */
void bench_hdr_text(FILE *f, const char *name, const struct hdr *h);
void bench_hdr_json(FILE *f, const struct hdr *h);

#endif
