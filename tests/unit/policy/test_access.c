/* tests/unit/policy/test_access.c — the relay decision: (client,
 * recipient, source route, configuration) -> verdict, including the
 * classic open-relay probes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "policy/access.h"

enum cfg {
  CFG_NORMAL, /* mynetworks 127.0.0.0/8, 10.0.0.0/8, ::1; ours.example
                 local, relayed.example relayed */
  CFG_OPEN,   /* the same with open_relay */
  CFG_EMPTY,  /* no networks, no domains */
  CFG_COUNT,
};

struct access_case {
  const char *label;
  enum cfg cfg;
  const char *client; /* IP text, or NULL for no address */
  const char *rcpt;
  int source_route;
  int want_accept;
  const char *want_reason;
};

#define ACCEPT(reason) 1, reason
#define DENIED 0, "relay_denied"
#define PROBE 0, "relay_probe"

static const struct access_case cases[] = {
    /* Rule 2: local and relay domains, from anyone. */
    {"outsider to local", CFG_NORMAL, "203.0.113.5", "user@ours.example", 0,
     ACCEPT("local_domain")},
    {"local domain any case", CFG_NORMAL, "203.0.113.5", "User@OURS.Example", 0,
     ACCEPT("local_domain")},
    {"local domain trailing dot", CFG_NORMAL, "203.0.113.5",
     "user@ours.example.", 0, ACCEPT("local_domain")},
    {"outsider to relay domain", CFG_NORMAL, "203.0.113.5",
     "user@relayed.example", 0, ACCEPT("relay_domain")},
    {"bare postmaster", CFG_NORMAL, "203.0.113.5", "Postmaster", 0,
     ACCEPT("local_domain")},
    {"localhost not local when not listed", CFG_NORMAL, "203.0.113.5",
     "root@localhost", 0, DENIED},
    {"subdomain of local is not local", CFG_NORMAL, "203.0.113.5",
     "user@mail.ours.example", 0, DENIED},
    {"suffix trick is not local", CFG_NORMAL, "203.0.113.5",
     "user@evilours.example", 0, DENIED},
    /* Rule 4: outsider to elsewhere. */
    {"outsider to elsewhere", CFG_NORMAL, "203.0.113.5", "user@ext.example", 0,
     DENIED},
    {"outsider v6 to elsewhere", CFG_NORMAL, "2001:db8::5", "user@ext.example",
     0, DENIED},
    {"no client address", CFG_NORMAL, NULL, "user@ext.example", 0, DENIED},
    {"address literal not listed", CFG_NORMAL, "203.0.113.5",
     "user@[192.0.2.1]", 0, DENIED},
    {"address literal of our own listener", CFG_NORMAL, "203.0.113.5",
     "user@[127.0.0.1]", 0, DENIED},
    {"domainless other than postmaster", CFG_NORMAL, "203.0.113.5", "root", 0,
     DENIED},
    {"empty domain", CFG_NORMAL, "203.0.113.5", "user@", 0, DENIED},
    /* Rule 3: trusted clients relay anywhere. */
    {"loopback to elsewhere", CFG_NORMAL, "127.0.0.1", "user@ext.example", 0,
     ACCEPT("trusted_client")},
    {"mynetworks to elsewhere", CFG_NORMAL, "10.20.30.40", "user@ext.example",
     0, ACCEPT("trusted_client")},
    {"v6 loopback to elsewhere", CFG_NORMAL, "::1", "user@ext.example", 0,
     ACCEPT("trusted_client")},
    {"mapped loopback to elsewhere", CFG_NORMAL, "::ffff:127.0.0.1",
     "user@ext.example", 0, ACCEPT("trusted_client")},
    {"mapped outsider to elsewhere", CFG_NORMAL, "::ffff:203.0.113.5",
     "user@ext.example", 0, DENIED},
    {"trusted to local", CFG_NORMAL, "127.0.0.1", "user@ours.example", 0,
     ACCEPT("local_domain")},
    /* Rule 1: relay probes from outsiders. */
    {"percent hack", CFG_NORMAL, "203.0.113.5", "u%ext.example@ours.example", 0,
     PROBE},
    {"bang path", CFG_NORMAL, "203.0.113.5", "ext.example!u@ours.example", 0,
     PROBE},
    {"quoted at", CFG_NORMAL, "203.0.113.5", "\"u@ext.example\"@ours.example",
     0, PROBE},
    {"quoted percent", CFG_NORMAL, "203.0.113.5",
     "\"u%ext.example\"@ours.example", 0, PROBE},
    {"quoted at with escaped quote", CFG_NORMAL, "203.0.113.5",
     "\"u\\\"@ext.example\"@ours.example", 0, PROBE},
    {"source route", CFG_NORMAL, "203.0.113.5", "u@ext.example", 1, PROBE},
    {"source route to local", CFG_NORMAL, "203.0.113.5", "u@ours.example", 1,
     PROBE},
    {"percent hack to relay domain", CFG_NORMAL, "203.0.113.5",
     "u%ext.example@relayed.example", 0, PROBE},
    {"percent in domain part is not a probe", CFG_NORMAL, "203.0.113.5",
     "u@ours%.example", 0, DENIED},
    {"quoted plain local part", CFG_NORMAL, "203.0.113.5",
     "\"john smith\"@ours.example", 0, ACCEPT("local_domain")},
    {"quoted at to elsewhere", CFG_NORMAL, "203.0.113.5",
     "\"u@ours.example\"@ext.example", 0, PROBE},
    /* Rule 1 does not apply to trusted clients. */
    {"trusted percent hack", CFG_NORMAL, "127.0.0.1",
     "u%ext.example@ours.example", 0, ACCEPT("local_domain")},
    {"trusted bang path", CFG_NORMAL, "10.0.0.1", "ext.example!u@ours.example",
     0, ACCEPT("local_domain")},
    {"trusted quoted at", CFG_NORMAL, "::1", "\"u@ext.example\"@ours.example",
     0, ACCEPT("local_domain")},
    {"trusted source route", CFG_NORMAL, "127.0.0.1", "u@ext.example", 1,
     ACCEPT("trusted_client")},
    /* open_relay accepts everything. */
    {"open relay outsider elsewhere", CFG_OPEN, "203.0.113.5",
     "user@ext.example", 0, ACCEPT("open_relay")},
    {"open relay no address", CFG_OPEN, NULL, "user@ext.example", 0,
     ACCEPT("open_relay")},
    {"open relay percent hack", CFG_OPEN, "203.0.113.5",
     "u%ext.example@ours.example", 0, ACCEPT("local_domain")},
    {"open relay source route", CFG_OPEN, "203.0.113.5", "u@ext.example", 1,
     ACCEPT("open_relay")},
    {"open relay literal", CFG_OPEN, "203.0.113.5", "u@[192.0.2.1]", 0,
     ACCEPT("open_relay")},
    /* Nothing configured: nobody relays, nothing is local. */
    {"empty config loopback", CFG_EMPTY, "127.0.0.1", "user@ext.example", 0,
     DENIED},
    {"empty config localhost", CFG_EMPTY, "127.0.0.1", "user@localhost", 0,
     DENIED},
};

/* build_config makes one of the test configurations from a file. */
static struct config *build_config(enum cfg which) {
  static const char *const yaml[CFG_COUNT] = {
      [CFG_NORMAL] = "mynetworks: [127.0.0.0/8, 10.0.0.0/8, \"::1\"]\n"
                     "local_domains: [Ours.Example]\n"
                     "relay_domains: [relayed.example.]\n",
      [CFG_OPEN] = "mynetworks: [127.0.0.0/8, 10.0.0.0/8, \"::1\"]\n"
                   "local_domains: [ours.example]\n"
                   "relay_domains: [relayed.example]\n"
                   "open_relay: true\n",
      [CFG_EMPTY] = "mynetworks: []\nlocal_domains: []\n",
  };
  char path[256];
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(path, sizeof(path), "%s/test_access.XXXXXX", dir);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t n = strlen(yaml[which]);
  assert_int_equal(write(fd, yaml[which], n), (ssize_t)n);
  close(fd);
  char err[512] = "";
  struct config *c = config_load(path, err, sizeof(err));
  unlink(path);
  if (c == NULL) {
    fail_msg("test config %d: %s", which, err);
  }
  return c;
}

static int setup(void **state) {
  /* The configurations come from files alone, whatever the shell has. */
  static const char *const vars[] = {
      "POSTSEAL_SMTP_LISTEN",    "POSTSEAL_SUBMISSION_LISTEN",
      "POSTSEAL_METRICS_LISTEN", "POSTSEAL_SPOOL_DIR",
      "POSTSEAL_RELAYHOST",      "POSTSEAL_MYNETWORKS",
      "POSTSEAL_THREADS",        "POSTSEAL_LOG_FORMAT",
      "POSTSEAL_HOSTNAME",       "POSTSEAL_LOCAL_DOMAINS",
      "POSTSEAL_RELAY_DOMAINS"};
  for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
    unsetenv(vars[i]);
  }
  struct config **cfgs = calloc(CFG_COUNT, sizeof(*cfgs));
  assert_non_null(cfgs);
  for (int i = 0; i < CFG_COUNT; i++) {
    cfgs[i] = build_config((enum cfg)i);
  }
  *state = cfgs;
  return 0;
}

static int teardown(void **state) {
  struct config **cfgs = *state;
  for (int i = 0; i < CFG_COUNT; i++) {
    config_free(cfgs[i]);
  }
  free(cfgs);
  return 0;
}

static const struct sockaddr *sa_make(struct sockaddr_storage *ss,
                                      const char *ip) {
  if (ip == NULL) {
    return NULL;
  }
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
  } else {
    fail_msg("test bug: bad address %s", ip);
  }
  return (const struct sockaddr *)ss;
}

static void test_access_table(void **state) {
  struct config **cfgs = *state;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct access_case *tc = &cases[i];
    struct sockaddr_storage ss;
    struct access_verdict v;
    memset(&v, 0xa5, sizeof(v));
    access_check_rcpt(cfgs[tc->cfg], sa_make(&ss, tc->client), tc->rcpt,
                      tc->source_route, &v);
    if (v.accept != tc->want_accept || strcmp(v.reason, tc->want_reason)) {
      fail_msg("%s: client %s rcpt <%s> route=%d: got accept=%d reason=%s, "
               "want accept=%d reason=%s",
               tc->label, tc->client ? tc->client : "(none)", tc->rcpt,
               tc->source_route, v.accept, v.reason, tc->want_accept,
               tc->want_reason);
    }
    int want_code = tc->want_accept ? 250 : 554;
    const char *want_enh = tc->want_accept ? "2.1.5" : "5.7.1";
    if (v.code != want_code || strcmp(v.enhanced, want_enh) != 0 ||
        v.text == NULL || v.text[0] == '\0') {
      fail_msg("%s: got %d %s \"%s\", want %d %s", tc->label, v.code,
               v.enhanced, v.text ? v.text : "(null)", want_code, want_enh);
    }
  }
}

static void test_denied_text(void **state) {
  struct config **cfgs = *state;
  struct sockaddr_storage ss;
  struct access_verdict v;
  access_check_rcpt(cfgs[CFG_NORMAL], sa_make(&ss, "203.0.113.5"),
                    "user@ext.example", 0, &v);
  assert_string_equal(v.text, "Relay access denied");
}

static void test_client_trusted(void **state) {
  struct config **cfgs = *state;
  struct sockaddr_storage ss;
  assert_int_equal(
      access_client_trusted(cfgs[CFG_NORMAL], sa_make(&ss, "127.0.0.2")), 1);
  assert_int_equal(
      access_client_trusted(cfgs[CFG_NORMAL], sa_make(&ss, "11.0.0.1")), 0);
  assert_int_equal(access_client_trusted(cfgs[CFG_NORMAL], NULL), 0);
  assert_int_equal(
      access_client_trusted(cfgs[CFG_OPEN], sa_make(&ss, "11.0.0.1")), 1);
  assert_int_equal(
      access_client_trusted(cfgs[CFG_EMPTY], sa_make(&ss, "127.0.0.1")), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_access_table),
      cmocka_unit_test(test_denied_text),
      cmocka_unit_test(test_client_trusted),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
