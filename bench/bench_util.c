/* bench/bench_util.c — clock, address parsing, test messages and histogram
 * output shared by the postseal-bench subcommands; see bench.h. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include "bench/bench.h"
#include "core/netaddr.h"

int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int bench_addr_parse(const char *text, struct sockaddr_storage *out,
                     socklen_t *out_len) {
  char host[64];
  uint16_t port;
  memset(out, 0, sizeof(*out));
  if (hostport_parse(text, host, sizeof(host), &port) != 0) {
    return -1;
  }
  struct sockaddr_in *v4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, host[0] ? host : "0.0.0.0", &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *out_len = sizeof(*v4);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *out_len = sizeof(*v6);
    return 0;
  }
  return -1;
}

int bench_text_message(struct buf *out, size_t size, const char *name,
                       const char *text) {
  size_t start = out->len, text_len = strlen(text);
  int rc = buf_printf(out,
                      "From: Bench <bench@" BENCH_TEXT_DOMAIN ">\r\n"
                      "To: <rcpt@bench.example>\r\n"
                      "Subject: %s message of %zu octets\r\n"
                      "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
                      "Message-ID: <%s.1@" BENCH_TEXT_DOMAIN ">\r\n"
                      "MIME-Version: 1.0\r\n"
                      "Content-Type: text/plain; charset=us-ascii\r\n"
                      "\r\n",
                      name, size, name);
  size_t w = 0;
  while (rc == 0 && out->len - start + 2 < size) {
    size_t line = size - (out->len - start) - 2;
    line = line > BENCH_TEXT_LINE ? BENCH_TEXT_LINE : line;
    for (size_t i = 0; rc == 0 && i < line; i++, w++) {
      rc = buf_append(out, &text[w % text_len], 1);
    }
    rc = rc == 0 ? buf_append(out, "\r\n", 2) : rc;
  }
  return rc == 0 && out->len - start == size ? 0 : -1;
}

static const double bench_pcts[] = {50, 90, 99, 99.9};

void bench_hdr_text(FILE *f, const char *name, const struct hdr *h) {
  fprintf(f, "  %-8s n=%-9llu min=%-8llu", name, (unsigned long long)h->total,
          (unsigned long long)h->min);
  static const char *labels[] = {"p50", "p90", "p99", "p99.9"};
  for (size_t i = 0; i < sizeof(bench_pcts) / sizeof(bench_pcts[0]); i++) {
    fprintf(f, " %s=%-8llu", labels[i],
            (unsigned long long)hdr_value_at_percentile(h, bench_pcts[i]));
  }
  fprintf(f, " max=%-8llu mean=%.1f (us)\n", (unsigned long long)h->max,
          hdr_mean(h));
}

void bench_hdr_json(FILE *f, const struct hdr *h) {
  fprintf(f,
          "{\"count\": %llu, \"min\": %llu, \"mean\": %.1f, \"p50\": %llu, "
          "\"p90\": %llu, \"p99\": %llu, \"p99_9\": %llu, \"max\": %llu, "
          "\"clamped\": %llu}",
          (unsigned long long)h->total, (unsigned long long)h->min, hdr_mean(h),
          (unsigned long long)hdr_value_at_percentile(h, 50),
          (unsigned long long)hdr_value_at_percentile(h, 90),
          (unsigned long long)hdr_value_at_percentile(h, 99),
          (unsigned long long)hdr_value_at_percentile(h, 99.9),
          (unsigned long long)h->max, (unsigned long long)h->num_clamped);
}
