/* tests/unit/core/test_config.c — defaults, a full file, every kind of
 * file error with its line, environment overrides and their errors, size
 * suffixes, domain matching, and the shipped example configuration. */
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

#include "core/config.h"

static const char *const env_vars[] = {
    "POSTSEAL_SMTP_LISTEN",    "POSTSEAL_SUBMISSION_LISTEN",
    "POSTSEAL_METRICS_LISTEN", "POSTSEAL_SPOOL_DIR",
    "POSTSEAL_RELAYHOST",      "POSTSEAL_MYNETWORKS",
    "POSTSEAL_THREADS",        "POSTSEAL_LOG_FORMAT",
    "POSTSEAL_HOSTNAME",       "POSTSEAL_LOCAL_DOMAINS",
    "POSTSEAL_RELAY_DOMAINS",  "POSTSEAL_SUBMISSIONS_LISTEN",
    "POSTSEAL_TLS_CERT_FILE",  "POSTSEAL_TLS_KEY_FILE",
    "POSTSEAL_TLS_CA_FILE",    "POSTSEAL_TLS_OUTBOUND",
    "POSTSEAL_TLS_POLICIES",   "POSTSEAL_AUTH_PASSWD_FILE",
};

/* clear_env: tests start from no overrides, whatever the shell had. */
static int clear_env(void **state) {
  for (size_t i = 0; i < sizeof(env_vars) / sizeof(env_vars[0]); i++) {
    unsetenv(env_vars[i]);
  }
  return 0;
}

/* temp_file writes text to a new file; path gets its name. */
static void temp_file(char *path, size_t path_len, const char *text) {
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(path, path_len, "%s/test_config.XXXXXX", dir);
  int fd = mkstemp(path);
  if (fd < 0) {
    fail_msg("mkstemp %s failed", path);
  }
  size_t n = strlen(text);
  if (write(fd, text, n) != (ssize_t)n) {
    fail_msg("write %s failed", path);
  }
  close(fd);
}

/* load_text loads a config from text via a temporary file. */
static struct config *load_text(const char *text, char *path, size_t path_len,
                                char *err, size_t err_len) {
  temp_file(path, path_len, text);
  struct config *c = config_load(path, err, err_len);
  unlink(path);
  return c;
}

static const struct sockaddr *sa_v4(struct sockaddr_in *sin, const char *ip) {
  memset(sin, 0, sizeof(*sin));
  sin->sin_family = AF_INET;
  assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
  return (const struct sockaddr *)sin;
}

static int trusts(const struct config *c, const char *ip) {
  struct sockaddr_in sin;
  const struct sockaddr *sa = sa_v4(&sin, ip);
  for (size_t i = 0; i < c->num_mynetworks; i++) {
    if (cidr_match(&c->mynetworks[i], sa)) {
      return 1;
    }
  }
  return 0;
}

static void check_listen(const char *label, const struct config_listen *l,
                         int enabled, const char *host, unsigned port) {
  if (l->enabled != enabled ||
      (enabled && (strcmp(l->host, host) != 0 || l->port != port))) {
    fail_msg("%s: got enabled=%d %s port %u, want enabled=%d %s port %u", label,
             l->enabled, l->host, l->port, enabled, host, port);
  }
}

static void test_defaults(void **state) {
  char err[512] = "";
  struct config *c = config_load(NULL, err, sizeof(err));
  if (c == NULL) {
    fail_msg("config_load(NULL): got NULL (%s), want defaults", err);
  }
  assert_null(c->path);
  assert_non_null(c->hostname);
  assert_true(c->hostname[0] != '\0');
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned want_threads = cpus < 1 ? 1 : cpus > 64 ? 64 : (unsigned)cpus;
  assert_int_equal(c->threads, want_threads);
  check_listen("smtp", &c->smtp, 1, "127.0.0.1", 2525);
  check_listen("submission", &c->submission, 1, "127.0.0.1", 2587);
  check_listen("metrics", &c->metrics, 1, "127.0.0.1", 9425);
  assert_string_equal(c->smtp.text, "127.0.0.1:2525");
  assert_string_equal(c->spool_dir, "spool");
  assert_string_equal(c->relayhost, "");
  assert_int_equal(c->log_format, CONFIG_LOG_PLAIN);
  assert_int_equal(c->num_mynetworks, 2);
  assert_true(trusts(c, "127.0.0.1"));
  assert_false(trusts(c, "192.0.2.1"));
  assert_int_equal(c->mynetworks[1].family, AF_INET6);
  assert_int_equal(c->mynetworks[1].prefix, 128);
  assert_int_equal(c->num_local_domains, 1);
  assert_string_equal(c->local_domains[0], "localhost");
  assert_int_equal(c->num_relay_domains, 0);
  assert_int_equal(c->open_relay, 0);
  assert_int_equal(c->message_size_limit, 10u << 20);
  assert_int_equal(c->recipient_limit, 100);
  assert_int_equal(c->header_size_limit, 1u << 20);
  assert_int_equal(c->error_limit, 20);
  assert_int_equal(c->max_sessions, 10000);
  assert_int_equal(c->timeout_command, 300);
  assert_int_equal(c->timeout_data, 180);
  assert_int_equal(c->timeout_shutdown, 10);
  assert_int_equal(c->delivery_concurrency, 10);
  assert_int_equal(c->delivery_messages_per_connection, 100);
  assert_int_equal(c->delivery_retry_initial, 60);
  assert_int_equal(c->delivery_retry_max, 3600);
  assert_int_equal(c->delivery_max_lifetime, 5 * 86400);
  assert_int_equal(c->delivery_connect_timeout, 30);
  config_free(c);
}

static const char full_yaml[] =
    "# every key\n"
    "hostname: mx1.example.org.\n"
    "threads: 3\n"
    "listen:\n"
    "  smtp: \"[::1]:25\"\n"
    "  submission: \":587\"\n"
    "  metrics: \"\"\n"
    "spool_dir: /var/spool/postseal\n"
    "relayhost: \"[smtp.example.net]:587\"\n"
    "log_format: json\n"
    "mynetworks:\n"
    "  - 10.0.0.0/8\n"
    "  - \"[2001:db8::]/32\"\n"
    "local_domains: [Example.ORG., \"[192.0.2.1]\"]\n"
    "relay_domains:\n"
    "  - Backup.Example.COM\n"
    "open_relay: false\n"
    "limits:\n"
    "  message_size: 25M\n"
    "  recipients: 500\n"
    "  header_size: 256k\n"
    "  errors: 5\n"
    "  sessions_per_thread: 2000\n"
    "timeouts:\n"
    "  command: 60\n"
    "  data: 120\n"
    "  shutdown: 0\n"
    "delivery:\n"
    "  concurrency: 4\n"
    "  messages_per_connection: 7\n"
    "  retry_initial: 5\n"
    "  retry_max: 50\n"
    "  max_lifetime: 3600\n"
    "  connect_timeout: 9\n";

static void test_full_file(void **state) {
  char path[256];
  char err[512] = "";
  struct config *c = load_text(full_yaml, path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("full file: got error \"%s\", want a config", err);
  }
  assert_string_equal(c->path, path);
  assert_string_equal(c->hostname, "mx1.example.org");
  assert_int_equal(c->threads, 3);
  check_listen("smtp", &c->smtp, 1, "::1", 25);
  check_listen("submission", &c->submission, 1, "", 587);
  check_listen("metrics", &c->metrics, 0, "", 0);
  assert_string_equal(c->smtp.text, "[::1]:25");
  assert_string_equal(c->spool_dir, "/var/spool/postseal");
  assert_string_equal(c->relayhost, "[smtp.example.net]:587");
  assert_int_equal(c->log_format, CONFIG_LOG_JSON);
  assert_int_equal(c->num_mynetworks, 2);
  assert_true(trusts(c, "10.9.8.7"));
  assert_false(trusts(c, "127.0.0.1")); /* the list replaces the default */
  assert_int_equal(c->num_local_domains, 2);
  assert_string_equal(c->local_domains[0], "example.org");
  assert_string_equal(c->local_domains[1], "[192.0.2.1]");
  assert_int_equal(c->num_relay_domains, 1);
  assert_string_equal(c->relay_domains[0], "backup.example.com");
  assert_int_equal(c->open_relay, 0);
  assert_int_equal(c->message_size_limit, 25u << 20);
  assert_int_equal(c->recipient_limit, 500);
  assert_int_equal(c->header_size_limit, 256u << 10);
  assert_int_equal(c->error_limit, 5);
  assert_int_equal(c->max_sessions, 2000);
  assert_int_equal(c->timeout_command, 60);
  assert_int_equal(c->timeout_data, 120);
  assert_int_equal(c->timeout_shutdown, 0);
  assert_int_equal(c->delivery_concurrency, 4);
  assert_int_equal(c->delivery_messages_per_connection, 7);
  assert_int_equal(c->delivery_retry_initial, 5);
  assert_int_equal(c->delivery_retry_max, 50);
  assert_int_equal(c->delivery_max_lifetime, 3600);
  assert_int_equal(c->delivery_connect_timeout, 9);
  config_free(c);
}

static void test_partial_and_empty_files(void **state) {
  char path[256];
  char err[512] = "";
  struct config *c = load_text("", path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("empty file: got error \"%s\", want defaults", err);
  }
  assert_int_equal(c->smtp.port, 2525);
  config_free(c);

  c = load_text("# only a comment\n", path, sizeof(path), err, sizeof(err));
  assert_non_null(c);
  config_free(c);

  /* A nested mapping sets only what it names. */
  c = load_text("listen:\n  smtp: 127.0.0.1:10025\nopen_relay: TRUE\n", path,
                sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("partial file: got error \"%s\"", err);
  }
  check_listen("smtp", &c->smtp, 1, "127.0.0.1", 10025);
  check_listen("submission", &c->submission, 1, "127.0.0.1", 2587);
  assert_int_equal(c->open_relay, 1);

  /* Empty lists are allowed: nobody trusted, nothing local. */
  config_free(c);
  c = load_text("mynetworks: []\nlocal_domains: []\n", path, sizeof(path), err,
                sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->num_mynetworks, 0);
  assert_int_equal(c->num_local_domains, 0);
  config_free(c);
}

struct file_err_case {
  const char *label;
  const char *yaml;
  int want_line;
  const char *want_msg; /* substring of what follows "FILE:LINE: " */
};

static const struct file_err_case file_err_cases[] = {
    {"unknown top-level key", "threads: 2\nthread: 2\n", 2,
     "unknown key \"thread\""},
    {"unknown nested key", "limits:\n  recipients: 10\n  bogus: 1\n", 3,
     "limits: unknown key \"bogus\""},
    {"duplicate top-level key", "threads: 2\nhostname: a\nthreads: 3\n", 3,
     "duplicate key \"threads\""},
    {"duplicate nested key", "listen:\n  smtp: :25\n  smtp: :26\n", 3,
     "listen: duplicate key \"smtp\""},
    {"syntax error: bad indent", "listen:\n  smtp: :25\n metrics: :1\n", 3,
     "YAML syntax error"},
    {"syntax error: unclosed quote", "hostname: a\nrelayhost: \"abc\n", 3,
     "YAML syntax error"},
    {"syntax error: tab indent", "limits:\n\trecipients: 5\n", 2,
     "YAML syntax error"},
    {"undefined alias", "threads: *nope\n", 1, "YAML syntax error"},
    {"top level is a list", "- a\n- b\n", 1, "expected a mapping, got a list"},
    {"top level is a scalar", "hello\n", 1, "expected a mapping"},
    {"two documents", "threads: 1\n---\nthreads: 2\n", 3,
     "only one YAML document"},
    {"mapping key not a string", "? [a]\n: 1\n", 1, "keys must be strings"},
    {"string where mapping wanted", "limits: 5\n", 1,
     "limits: expected a mapping, got a scalar"},
    {"mapping where string wanted", "hostname:\n  a: b\n", 2,
     "hostname: expected a string, got a mapping"},
    {"list where scalar wanted", "threads: [1]\n", 1,
     "threads: expected a number or true/false, got a list"},
    {"scalar where list wanted", "mynetworks: 10.0.0.0/8\n", 1,
     "mynetworks: expected a list, got a scalar"},
    {"null value", "hostname: mx\nspool_dir:\n", 2, "spool_dir: no value"},
    {"tilde null", "relayhost: ~\n", 1, "relayhost: no value"},
    {"quoted number", "threads: \"4\"\n", 1, "got a quoted string"},
    {"threads zero", "threads: 0\n", 1, "threads: 0 is out of range (1..64)"},
    {"threads too many", "threads: 65\n", 1, "out of range"},
    {"threads negative", "threads: -1\n", 1, "is not a non-negative integer"},
    {"threads float", "threads: 1.5\n", 1, "is not a non-negative integer"},
    {"threads hex", "threads: 0x4\n", 1, "is not a non-negative integer"},
    {"threads overflow", "threads: 99999999999999999999999\n", 1,
     "is too large"},
    {"recipients zero", "limits:\n  recipients: 0\n", 2,
     "limits.recipients: 0 is out of range"},
    {"recipients with suffix", "limits:\n  recipients: 1k\n", 2,
     "is not a non-negative integer"},
    {"message size below RFC minimum", "limits:\n  message_size: 1k\n", 2,
     "limits.message_size: 1024 is out of range"},
    {"message size bad suffix", "limits:\n  message_size: 10T\n", 2,
     "is not a size"},
    {"message size suffix twice", "limits:\n  message_size: 10MM\n", 2,
     "is not a size"},
    {"message size suffix overflow",
     "limits:\n  message_size: 99999999999999G\n", 2, "is too large"},
    {"header size too small", "limits:\n  header_size: 100\n", 2,
     "limits.header_size: 100 is out of range"},
    {"errors zero", "limits:\n  errors: 0\n", 2, "limits.errors"},
    {"sessions zero", "limits:\n  sessions_per_thread: 0\n", 2,
     "limits.sessions_per_thread"},
    {"timeout zero", "timeouts:\n  command: 0\n", 2,
     "timeouts.command: 0 is out of range"},
    {"shutdown too long", "timeouts:\n  shutdown: 3601\n", 2,
     "timeouts.shutdown"},
    {"delivery concurrency zero", "delivery:\n  concurrency: 0\n", 2,
     "delivery.concurrency: 0 is out of range"},
    {"delivery per connection zero",
     "delivery:\n  messages_per_connection: 0\n", 2,
     "delivery.messages_per_connection"},
    {"delivery retry zero", "delivery:\n  retry_initial: 0\n", 2,
     "delivery.retry_initial: 0 is out of range"},
    {"delivery lifetime too long", "delivery:\n  max_lifetime: 7776001\n", 2,
     "delivery.max_lifetime"},
    {"delivery unknown key", "delivery:\n  retries: 3\n", 2,
     "unknown key \"retries\""},
    {"bool not true/false", "open_relay: yes\n", 1,
     "open_relay: \"yes\" is not true or false"},
    {"bool quoted", "open_relay: \"true\"\n", 1, "got a quoted string"},
    {"bad log format", "log_format: xml\n", 1, "is not plain or json"},
    {"cidr host bits", "mynetworks:\n  - 127.0.0.0/8\n  - 10.1.2.3/8\n", 3,
     "mynetworks: \"10.1.2.3/8\" is not a network"},
    {"cidr garbage", "mynetworks: [127.0.0.0/8, banana]\n", 1,
     "\"banana\" is not a network"},
    {"cidr list item is a mapping", "mynetworks:\n  - a: b\n", 2,
     "expected a string, got a mapping"},
    {"listen no port", "listen:\n  smtp: 127.0.0.1\n", 2,
     "listen.smtp: \"127.0.0.1\" is not host:port"},
    {"listen port range", "listen:\n  metrics: 127.0.0.1:70000\n", 2,
     "listen.metrics"},
    {"listen unbracketed v6", "listen:\n  submission: \"::1:587\"\n", 2,
     "listen.submission"},
    {"listen null", "listen:\n  smtp:\n", 2, "listen.smtp: no value"},
    {"relayhost bad", "relayhost: \"[x.example:25\"\n", 1,
     "relayhost: \"[x.example:25\" is not [host]:port"},
    {"hostname bad", "hostname: \"mx_1.example\"\n", 1,
     "hostname: \"mx_1.example\" is not a valid host name"},
    {"hostname empty", "hostname: \"\"\n", 1, "is not a valid host name"},
    {"spool_dir empty", "spool_dir: \"\"\n", 1, "spool_dir: must not be empty"},
    {"domain bad", "local_domains:\n  - ok.example\n  - bad domain\n", 3,
     "local_domains: \"bad domain\" is not a domain"},
    {"domain literal bad", "relay_domains: [\"[300.1.1.1]\"]\n", 1,
     "relay_domains"},
    {"nul in value", "hostname: \"a\\0b\"\n", 1, "contains a NUL byte"},
};

static void test_file_errors(void **state) {
  for (size_t i = 0; i < sizeof(file_err_cases) / sizeof(file_err_cases[0]);
       i++) {
    const struct file_err_case *tc = &file_err_cases[i];
    char path[256];
    char err[512] = "";
    struct config *c =
        load_text(tc->yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL) {
      config_free(c);
      fail_msg("%s: got a config, want an error at line %d", tc->label,
               tc->want_line);
    }
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "%s:%d: ", path, tc->want_line);
    if (strncmp(err, prefix, strlen(prefix)) != 0 ||
        strstr(err + strlen(prefix), tc->want_msg) == NULL) {
      fail_msg("%s:\n  got  \"%s\"\n  want \"%s%s...\"", tc->label, err, prefix,
               tc->want_msg);
    }
  }
}

static void test_too_many_entries(void **state) {
  char yaml[16384] = "relay_domains:\n";
  for (int i = 0; i <= CONFIG_MAX_LIST; i++) {
    char line[64];
    snprintf(line, sizeof(line), "  - d%d.example\n", i);
    strcat(yaml, line);
  }
  char path[256];
  char err[512] = "";
  struct config *c = load_text(yaml, path, sizeof(path), err, sizeof(err));
  assert_null(c);
  char want[300];
  snprintf(want, sizeof(want), "%s:%d: relay_domains: more than %d entries",
           path, CONFIG_MAX_LIST + 2, CONFIG_MAX_LIST);
  if (strcmp(err, want) != 0) {
    fail_msg("got \"%s\", want \"%s\"", err, want);
  }
}

static void test_missing_file(void **state) {
  char err[512] = "";
  struct config *c =
      config_load("/nonexistent/postseald.yaml", err, sizeof(err));
  assert_null(c);
  if (strstr(err, "/nonexistent/postseald.yaml: cannot open") != err) {
    fail_msg("got \"%s\", want \"/nonexistent/postseald.yaml: cannot open...\"",
             err);
  }
}

struct size_case {
  const char *label;
  const char *value;
  size_t want; /* 0: an error */
};

static void test_size_suffixes(void **state) {
  static const struct size_case cases[] = {
      {"plain bytes", "65536", 65536},
      {"k", "64k", 64u << 10},
      {"K", "100K", 100u << 10},
      {"M", "10M", 10u << 20},
      {"m", "3m", 3u << 20},
      {"G suffix, 0G below the minimum", "0G", 0},
      {"max", "512M", 512u << 20},
      {"just over max", "536870913", 0},
      {"1G over max", "1G", 0},
      {"B suffix", "10MB", 0},
      {"KiB", "64KiB", 0},
      {"space before suffix", "10 M", 0},
      {"suffix only", "M", 0},
      {"decimal", "1.5M", 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct size_case *tc = &cases[i];
    char yaml[128];
    snprintf(yaml, sizeof(yaml), "limits:\n  message_size: %s\n", tc->value);
    char path[256];
    char err[512] = "";
    struct config *c = load_text(yaml, path, sizeof(path), err, sizeof(err));
    size_t got = c ? c->message_size_limit : 0;
    if ((c == NULL) != (tc->want == 0) || got != tc->want) {
      fail_msg("%s: message_size %s: got %zu (err \"%s\"), want %zu", tc->label,
               tc->value, got, err, tc->want);
    }
    config_free(c);
  }
}

static void test_env_overrides(void **state) {
  setenv("POSTSEAL_SMTP_LISTEN", "[::1]:10025", 1);
  setenv("POSTSEAL_SUBMISSION_LISTEN", "", 1);
  setenv("POSTSEAL_METRICS_LISTEN", ":9100", 1);
  setenv("POSTSEAL_SPOOL_DIR", "/tmp/spool-x", 1);
  setenv("POSTSEAL_RELAYHOST", "[10.0.0.1]", 1);
  setenv("POSTSEAL_MYNETWORKS", " 192.0.2.0/24 ,\t198.51.100.7 ,::1", 1);
  setenv("POSTSEAL_THREADS", "2", 1);
  setenv("POSTSEAL_LOG_FORMAT", "json", 1);
  setenv("POSTSEAL_HOSTNAME", "relay.example", 1);
  setenv("POSTSEAL_LOCAL_DOMAINS", "A.example., b.example", 1);
  setenv("POSTSEAL_RELAY_DOMAINS", "", 1);

  /* The environment wins over the file. */
  char path[256];
  char err[512] = "";
  struct config *c =
      load_text("threads: 5\nrelay_domains: [x.example]\nlog_format: plain\n",
                path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("env overrides: got error \"%s\"", err);
  }
  check_listen("smtp", &c->smtp, 1, "::1", 10025);
  check_listen("submission", &c->submission, 0, "", 0);
  check_listen("metrics", &c->metrics, 1, "", 9100);
  assert_string_equal(c->spool_dir, "/tmp/spool-x");
  assert_string_equal(c->relayhost, "[10.0.0.1]");
  assert_int_equal(c->num_mynetworks, 3);
  assert_true(trusts(c, "192.0.2.77"));
  assert_true(trusts(c, "198.51.100.7"));
  assert_false(trusts(c, "127.0.0.1"));
  assert_int_equal(c->threads, 2);
  assert_int_equal(c->log_format, CONFIG_LOG_JSON);
  assert_string_equal(c->hostname, "relay.example");
  assert_int_equal(c->num_local_domains, 2);
  assert_string_equal(c->local_domains[0], "a.example");
  assert_string_equal(c->local_domains[1], "b.example");
  assert_int_equal(c->num_relay_domains, 0);
  config_free(c);

  /* And over the defaults when there is no file. */
  c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->threads, 2);
  assert_null(c->path);
  config_free(c);
  clear_env(NULL);
}

struct env_err_case {
  const char *label;
  const char *var;
  const char *value;
  const char *want; /* whole message */
};

static void test_env_errors(void **state) {
  static const struct env_err_case cases[] = {
      {"listen no port", "POSTSEAL_SMTP_LISTEN", "127.0.0.1",
       "env POSTSEAL_SMTP_LISTEN: \"127.0.0.1\" is not host:port, [v6]:port, "
       ":port or \"\""},
      {"listen bad port", "POSTSEAL_METRICS_LISTEN", ":0",
       "env POSTSEAL_METRICS_LISTEN: \":0\" is not host:port, [v6]:port, "
       ":port or \"\""},
      {"spool empty", "POSTSEAL_SPOOL_DIR", "",
       "env POSTSEAL_SPOOL_DIR: must not be empty"},
      {"relayhost bad", "POSTSEAL_RELAYHOST", "[a.example]:x",
       "env POSTSEAL_RELAYHOST: \"[a.example]:x\" is not [host]:port, [host], "
       "host:port or host"},
      {"relayhost v6 unbracketed", "POSTSEAL_RELAYHOST", "2001:db8::1",
       "env POSTSEAL_RELAYHOST: \"2001:db8::1\" is not [host]:port, [host], "
       "host:port or host"},
      {"mynetworks host bits", "POSTSEAL_MYNETWORKS", "127.0.0.0/8,10.0.0.1/8",
       "env POSTSEAL_MYNETWORKS: \"10.0.0.1/8\" is not a network (a.b.c.d/n "
       "or x::y/n, with no host bits set below the prefix)"},
      {"mynetworks empty entry", "POSTSEAL_MYNETWORKS", "127.0.0.0/8,,::1",
       "env POSTSEAL_MYNETWORKS: empty entry in the list"},
      {"mynetworks trailing comma", "POSTSEAL_MYNETWORKS", "127.0.0.0/8, ",
       "env POSTSEAL_MYNETWORKS: empty entry in the list"},
      {"threads zero", "POSTSEAL_THREADS", "0",
       "env POSTSEAL_THREADS: 0 is out of range (1..64)"},
      {"threads word", "POSTSEAL_THREADS", "four",
       "env POSTSEAL_THREADS: \"four\" is not a non-negative integer"},
      {"threads space", "POSTSEAL_THREADS", " 4",
       "env POSTSEAL_THREADS: \" 4\" is not a non-negative integer"},
      {"log format", "POSTSEAL_LOG_FORMAT", "JSON",
       "env POSTSEAL_LOG_FORMAT: \"JSON\" is not plain or json"},
      {"hostname", "POSTSEAL_HOSTNAME", "bad..name",
       "env POSTSEAL_HOSTNAME: \"bad..name\" is not a valid host name"},
      {"local domain", "POSTSEAL_LOCAL_DOMAINS", "ok.example,not ok",
       "env POSTSEAL_LOCAL_DOMAINS: \"not ok\" is not a domain name or "
       "address literal"},
      {"relay domain", "POSTSEAL_RELAY_DOMAINS", "[1.2.3]",
       "env POSTSEAL_RELAY_DOMAINS: \"[1.2.3]\" is not a domain name or "
       "address literal"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct env_err_case *tc = &cases[i];
    setenv(tc->var, tc->value, 1);
    char err[512] = "";
    struct config *c = config_load(NULL, err, sizeof(err));
    unsetenv(tc->var);
    if (c != NULL) {
      config_free(c);
      fail_msg("%s: got a config, want \"%s\"", tc->label, tc->want);
    }
    if (strcmp(err, tc->want) != 0) {
      fail_msg("%s:\n  got  \"%s\"\n  want \"%s\"", tc->label, err, tc->want);
    }
  }
}

static void test_env_blank_lists(void **state) {
  setenv("POSTSEAL_MYNETWORKS", "  ", 1);
  setenv("POSTSEAL_LOCAL_DOMAINS", "", 1);
  char err[512] = "";
  struct config *c = config_load(NULL, err, sizeof(err));
  clear_env(NULL);
  if (c == NULL) {
    fail_msg("blank lists: got error \"%s\"", err);
  }
  assert_int_equal(c->num_mynetworks, 0);
  assert_int_equal(c->num_local_domains, 0);
  config_free(c);
}

struct domain_case {
  const char *label;
  const char *domain;
  int want_local;
  int want_relay;
};

static void test_domain_match(void **state) {
  static const struct domain_case cases[] = {
      {"exact", "example.org", 1, 0},
      {"upper case", "EXAMPLE.Org", 1, 0},
      {"trailing dot", "example.org.", 1, 0},
      {"subdomain is not listed", "mail.example.org", 0, 0},
      {"parent is not listed", "org", 0, 0},
      {"prefix is not listed", "example.or", 0, 0},
      {"relay domain", "Backup.example.com", 0, 1},
      {"listed literal", "[192.0.2.1]", 1, 0},
      {"other literal", "[192.0.2.2]", 0, 0},
      {"literal v6 tag case", "[ipv6:2001:DB8::1]", 1, 0},
      {"empty", "", 0, 0},
      {"only dot", ".", 0, 0},
  };
  char path[256];
  char err[512] = "";
  struct config *c = load_text(
      "local_domains: [example.org, \"[192.0.2.1]\", \"[IPv6:2001:db8::1]\"]\n"
      "relay_domains: [backup.example.com]\n",
      path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("domains: got error \"%s\"", err);
  }
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct domain_case *tc = &cases[i];
    int local = config_is_local_domain(c, tc->domain);
    int relay = config_is_relay_domain(c, tc->domain);
    if (local != tc->want_local || relay != tc->want_relay) {
      fail_msg("%s: \"%s\": got local=%d relay=%d, want %d %d", tc->label,
               tc->domain, local, relay, tc->want_local, tc->want_relay);
    }
  }
  assert_int_equal(config_is_local_domain(c, NULL), 0);
  config_free(c);
}

/* The example shipped in deploy/ must load as it is. */
static void test_deploy_example(void **state) {
  char path[1024];
  snprintf(path, sizeof(path), "%s", __FILE__);
  char *cut = strstr(path, "tests/unit/core/test_config.c");
  if (cut == NULL) {
    skip();
  }
  strcpy(cut, "deploy/postseald.yaml");
  char err[512] = "";
  struct config *c = config_load(path, err, sizeof(err));
  if (c == NULL) {
    fail_msg("%s: got error \"%s\", want a config", path, err);
  }
  check_listen("smtp", &c->smtp, 1, "127.0.0.1", 2525);
  check_listen("submission", &c->submission, 1, "127.0.0.1", 2587);
  check_listen("metrics", &c->metrics, 1, "127.0.0.1", 9425);
  assert_string_equal(c->spool_dir, "build/spool");
  assert_int_equal(c->open_relay, 0);
  config_free(c);
}

/* TLS and AUTH keys: defaults, per-destination levels, and the rules that
 * join keys (cert with key, implicit TLS needs a certificate). */
static void test_tls_and_auth(void **state) {
  char path[256], err[512];
  struct config *c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->tls_outbound, CONFIG_TLS_MAY);
  assert_string_equal(c->tls_cert_file, "");
  assert_string_equal(c->tls_min_version, "1.2");
  assert_int_equal(c->submissions.enabled, 0);
  assert_int_equal(c->submission_require_auth, 1);
  assert_int_equal(c->submission_require_tls, 1);
  assert_int_equal(c->auth_max_failures, 5);
  assert_int_equal(config_tls_level(c, "example.com"), CONFIG_TLS_MAY);
  config_free(c);

  c = load_text("tls:\n  cert_file: /c.pem\n  key_file: /k.pem\n"
                "  outbound: encrypt\n  min_version: \"1.3\"\n"
                "  policies: [\"example.com verify\", \".example.org dane\",\n"
                "             \"mail.example.org  none\", \"* may\"]\n"
                "listen:\n  submissions: 127.0.0.1:2465\n"
                "auth:\n  passwd_file: /p\n  max_failures: 3\n"
                "submission:\n  require_auth: false\n",
                path, sizeof(path), err, sizeof(err));
  assert_non_null(c);
  static const struct {
    const char *domain;
    enum config_tls_level want;
  } cases[] = {
      {"example.com", CONFIG_TLS_VERIFY},
      {"EXAMPLE.COM.", CONFIG_TLS_VERIFY},
      {"sub.example.com", CONFIG_TLS_MAY}, /* exact entry only */
      {"a.example.org", CONFIG_TLS_DANE},
      {"mail.example.org", CONFIG_TLS_NONE}, /* exact beats suffix */
      {"example.org", CONFIG_TLS_MAY},       /* ".x" is subdomains only */
      {"other.net", CONFIG_TLS_MAY},         /* "*" beats tls.outbound */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    enum config_tls_level got = config_tls_level(c, cases[i].domain);
    if (got != cases[i].want) {
      fail_msg("%s: got %s, want %s", cases[i].domain,
               config_tls_level_name(got),
               config_tls_level_name(cases[i].want));
    }
  }
  assert_string_equal(c->tls_min_version, "1.3");
  assert_int_equal(c->submissions.port, 2465);
  assert_int_equal(c->auth_max_failures, 3);
  assert_int_equal(c->submission_require_auth, 0);
  config_free(c);

  static const struct {
    const char *yaml, *want;
  } bad[] = {
      {"tls:\n  cert_file: /c.pem\n", "set together"},
      {"listen:\n  submissions: 127.0.0.1:2465\n", "needs tls.cert_file"},
      {"tls:\n  outbound: maybe\n", "is not none, may"},
      {"tls:\n  policies: [\"example.com\"]\n", "DOMAIN LEVEL"},
      {"tls:\n  policies: [\"exa_mple.com may\"]\n", "is not a domain"},
      {"tls:\n  min_version: \"1.1\"\n", "is not 1.2 or 1.3"},
      {"auth:\n  max_failures: 0\n", "out of range"},
      {"auth:\n  max_failures: 33\n", "out of range"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = load_text(bad[i].yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL || strstr(err, bad[i].want) == NULL) {
      fail_msg("%s: got \"%s\", want \"%s\"", bad[i].yaml, err, bad[i].want);
    }
  }
}

/* TLS reporting keys (RFC 8460): defaults, values, bounds. */
static void test_tls_reports(void **state) {
  char path[256], err[512];
  struct config *c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->tls_reports, 1);
  assert_int_equal(c->tls_report_interval, 86400);
  assert_int_equal(c->tls_report_max_domains, 10000);
  assert_int_equal(c->tls_report_max_failure_details, 100);
  config_free(c);

  c = load_text("tls:\n  reports: false\n  report_interval: 5\n"
                "  report_max_domains: 7\n  report_max_failure_details: 3\n",
                path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("got error \"%s\", want a config", err);
  }
  assert_int_equal(c->tls_reports, 0);
  assert_int_equal(c->tls_report_interval, 5);
  assert_int_equal(c->tls_report_max_domains, 7);
  assert_int_equal(c->tls_report_max_failure_details, 3);
  config_free(c);

  static const struct {
    const char *yaml, *want;
  } bad[] = {
      {"tls:\n  reports: sometimes\n", "is not true or false"},
      {"tls:\n  report_interval: 0\n", "out of range"},
      {"tls:\n  report_interval: 604801\n", "out of range"},
      {"tls:\n  report_max_domains: 0\n", "out of range"},
      {"tls:\n  report_max_failure_details: 10001\n", "out of range"},
      {"tls:\n  report_intervals: 5\n", "report_intervals"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = load_text(bad[i].yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL || strstr(err, bad[i].want) == NULL) {
      fail_msg("%s: got \"%s\", want \"%s\"", bad[i].yaml, err, bad[i].want);
    }
  }
}

/* DKIM keys and options: defaults, values, rotation times, errors. */
static void test_dkim(void **state) {
  char path[256], err[512];
  struct config *c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->num_dkim_keys, 0);
  assert_int_equal(c->dkim_sign, 1);
  assert_int_equal(c->dkim_verify, 1);
  assert_int_equal(c->dkim_hdr_relaxed, 1);
  assert_int_equal(c->dkim_body_relaxed, 1);
  assert_int_equal(c->dkim_verify_max_signatures, 5);
  assert_int_equal(c->dkim_oversign_set, 0);
  config_free(c);

  c = load_text(
      "dkim:\n  keys:\n"
      "    - \"Example.ORG. Rsa2026 /k/rsa.key\"\n"
      "    - \"example.org ed.2026  /k/ed.key 2026-12-01T00:00:00Z\"\n"
      "    - \"example.net s1 /k/n.key 1767225600\"\n"
      "  canonicalization: simple\n"
      "  headers: [From, Subject, X-Custom]\n"
      "  oversign: []\n"
      "  signature_ttl: 86400\n  timestamp: false\n"
      "  default_domain: example.org\n"
      "  verify_max_signatures: 16\n",
      path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("got error \"%s\", want a config", err);
  }
  assert_int_equal(c->num_dkim_keys, 3);
  assert_string_equal(c->dkim_keys[0].domain, "example.org");
  assert_string_equal(c->dkim_keys[0].selector, "rsa2026");
  assert_string_equal(c->dkim_keys[0].key_file, "/k/rsa.key");
  assert_int_equal(c->dkim_keys[0].not_before, 0);
  assert_string_equal(c->dkim_keys[1].selector, "ed.2026");
  assert_int_equal(c->dkim_keys[1].not_before, 1796083200);
  assert_int_equal(c->dkim_keys[2].not_before, 1767225600);
  assert_int_equal(c->dkim_hdr_relaxed, 0);
  assert_int_equal(c->dkim_body_relaxed, 0);
  assert_int_equal(c->num_dkim_headers, 3);
  assert_string_equal(c->dkim_headers[2], "x-custom");
  assert_int_equal(c->dkim_oversign_set, 1);
  assert_int_equal(c->num_dkim_oversign, 0);
  assert_int_equal(c->dkim_signature_ttl, 86400);
  assert_int_equal(c->dkim_timestamp, 0);
  assert_string_equal(c->dkim_default_domain, "example.org");
  config_free(c);

  static const struct {
    const char *yaml, *want;
  } bad[] = {
      {"dkim:\n  keys: [\"example.org s1\"]\n", "DOMAIN SELECTOR KEY_FILE"},
      {"dkim:\n  keys: [\"example.org s1 /k a b\"]\n", "DOMAIN SELECTOR"},
      {"dkim:\n  keys: [\"example.org s_1 /k\"]\n", "is not a DKIM selector"},
      {"dkim:\n  keys: [\"example.org -s /k\"]\n", "is not a DKIM selector"},
      {"dkim:\n  keys: [\"example.org s1 /k tomorrow\"]\n", "is not a time"},
      {"dkim:\n  keys: [\"example.org s1 /k 2026-13-01T00:00:00Z\"]\n",
       "is not a time"},
      {"dkim:\n  keys: [\"exa_mple.org s1 /k\"]\n", "exa_mple.org"},
      {"dkim:\n  keys: [\"example.org s1 /a\", \"example.org S1 /b\"]\n",
       "listed twice"},
      {"dkim:\n  canonicalization: relaxed/loose\n", "simple or relaxed"},
      {"dkim:\n  headers: [\"Sub ject\"]\n", "not a header field name"},
      {"dkim:\n  headers: [From, from]\n", "listed twice"},
      {"dkim:\n  verify_max_signatures: 17\n", "out of range"},
      {"dkim:\n  signing: true\n", "signing"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = load_text(bad[i].yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL || strstr(err, bad[i].want) == NULL) {
      fail_msg("%s: got \"%s\", want \"%s\"", bad[i].yaml, err, bad[i].want);
    }
  }
}

/* Shared throttles: settings and the destination lookup. */
static void test_throttle(void **state) {
  (void)state;
  char path[256], err[512];
  struct config *c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_string_equal(c->throttle_redis, "");
  assert_int_equal(c->throttle_timeout_ms, 200);
  assert_string_equal(c->throttle_key_prefix, "postseal:");
  assert_int_equal(c->throttle_replicas, 1);
  assert_null(config_throttle_rate(c, "a.test"));
  config_free(c);
  c = load_text("throttle:\n"
                "  redis: 127.0.0.1:6379\n"
                "  rates: [\"Example.TEST 100/60\", \".big.test 5/500ms\",\n"
                "          \"* 1000/1h\"]\n"
                "  timeout_ms: 50\n  key_prefix: \"ps:\"\n  replicas: 3\n",
                path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("got error \"%s\", want a config", err);
  }
  assert_string_equal(c->throttle_redis, "127.0.0.1:6379");
  assert_int_equal(c->throttle_replicas, 3);
  static const struct {
    const char *domain, *want;
    unsigned rate, period_ms;
  } look[] = {
      {"example.test", "example.test", 100, 60000},
      {"mx.big.test", ".big.test", 5, 500},
      {"other.test", "*", 1000, 3600000},
  };
  for (size_t i = 0; i < sizeof(look) / sizeof(look[0]); i++) {
    const struct config_throttle_rate *r =
        config_throttle_rate(c, look[i].domain);
    if (r == NULL || strcmp(r->domain, look[i].want) != 0 ||
        r->rate != look[i].rate || r->period_ms != look[i].period_ms) {
      fail_msg("%s: got %s %u/%ums, want %s %u/%ums", look[i].domain,
               r ? r->domain : "none", r ? r->rate : 0, r ? r->period_ms : 0,
               look[i].want, look[i].rate, look[i].period_ms);
    }
  }
  config_free(c);
  static const struct {
    const char *yaml, *want;
  } bad[] = {
      {"throttle:\n  rates: [\"a.test 100\"]\n", "DESTINATION RATE/PERIOD"},
      {"throttle:\n  rates: [\"a.test 0/60\"]\n", "DESTINATION RATE/PERIOD"},
      {"throttle:\n  rates: [\"a.test 5/60 9\"]\n", "DESTINATION RATE/PERIOD"},
      {"throttle:\n  rates: [\"a_b 5/60\"]\n", "is not a domain"},
      {"throttle:\n  rates: [\"a.test 5/60\", \"A.test 6/60\"]\n",
       "listed twice"},
      {"throttle:\n  redis: nowhere\n", "is not host:port"},
      {"throttle:\n  key_prefix: \"a b\"\n", "without blanks"},
      {"throttle:\n  replicas: 0\n", "out of range"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = load_text(bad[i].yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL || strstr(err, bad[i].want) == NULL) {
      fail_msg("%s: got \"%s\", want \"%s\"", bad[i].yaml, err, bad[i].want);
    }
  }
}

/* S/MIME keys and the per-sender lookups. */
static void test_smime(void **state) {
  (void)state;
  char path[256], err[512];
  struct config *c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->smime_encrypt, CONFIG_SMIME_NONE);
  assert_int_equal(c->smime_verify, 1);
  assert_int_equal(c->smime_encrypt_to_sender, 1);
  assert_string_equal(c->smime_certs, "");
  assert_null(config_smime_signer(c, "a@b.test"));
  config_free(c);
  c = load_text("smime:\n"
                "  sign: [\"Example.TEST /k/dom.key /k/dom.crt\",\n"
                "         \"Boss@Example.test /k/boss.key /k/boss.crt\",\n"
                "         \"eu.example.test /k/eu.key /k/eu.crt\"]\n"
                "  certs: /etc/postseal/certs\n"
                "  trust: /etc/postseal/ca.pem\n"
                "  encrypt: if-possible\n"
                "  encrypt_policies: [\"legal.example.test required\",\n"
                "                     \"pr@example.test none\"]\n"
                "  cipher: aes-128-cbc\n"
                "  digest: sha512\n"
                "  opaque: true\n",
                path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("got error \"%s\", want a config", err);
  }
  assert_int_equal(c->num_smime_signers, 3);
  assert_string_equal(c->smime_signers[1].who, "boss@example.test");
  assert_string_equal(c->smime_certs, "/etc/postseal/certs");
  assert_string_equal(c->smime_trust, "/etc/postseal/ca.pem");
  assert_int_equal(c->smime_cipher, CONFIG_SMIME_AES128_CBC);
  assert_int_equal(c->smime_digest, 2);
  assert_int_equal(c->smime_opaque, 1);
  static const struct {
    const char *addr, *want_key;
    enum config_smime_policy want_policy;
  } look[] = {
      {"boss@example.test", "/k/boss.key", CONFIG_SMIME_IF_POSSIBLE},
      {"ann@example.test", "/k/dom.key", CONFIG_SMIME_IF_POSSIBLE},
      {"ann@x.eu.example.test", "/k/eu.key", CONFIG_SMIME_IF_POSSIBLE},
      {"ann@legal.example.test", "/k/dom.key", CONFIG_SMIME_REQUIRED},
      {"pr@example.test", "/k/dom.key", CONFIG_SMIME_NONE},
      {"ann@notexample.test", NULL, CONFIG_SMIME_IF_POSSIBLE},
  };
  for (size_t i = 0; i < sizeof(look) / sizeof(look[0]); i++) {
    const struct config_smime_signer *sg = config_smime_signer(c, look[i].addr);
    const char *got = sg != NULL ? sg->key_file : NULL;
    if ((got == NULL) != (look[i].want_key == NULL) ||
        (got != NULL && strcmp(got, look[i].want_key) != 0)) {
      fail_msg("%s: got key %s, want %s", look[i].addr, got ? got : "none",
               look[i].want_key ? look[i].want_key : "none");
    }
    if (config_smime_policy(c, look[i].addr) != look[i].want_policy) {
      fail_msg("%s: got policy %d, want %d", look[i].addr,
               (int)config_smime_policy(c, look[i].addr),
               (int)look[i].want_policy);
    }
  }
  config_free(c);
  static const struct {
    const char *yaml, *want;
  } bad[] = {
      {"smime:\n  sign: [\"a.test /k\"]\n", "WHO KEY_FILE CERT_FILE"},
      {"smime:\n  sign: [\"a.test /k /c /x\"]\n", "WHO KEY_FILE CERT_FILE"},
      {"smime:\n  sign: [\"@a.test /k /c\"]\n", "not an address"},
      {"smime:\n  sign: [\"a.test /k /c\", \"A.test /k2 /c2\"]\n",
       "listed twice"},
      {"smime:\n  encrypt: always\n", "none, if-possible or required"},
      {"smime:\n  encrypt_policies: [\"a.test maybe\"]\n", "WHO POLICY"},
      {"smime:\n  cipher: des\n", "is not aes-256-gcm"},
      {"smime:\n  digest: md5\n", "is not sha256"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = load_text(bad[i].yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL || strstr(err, bad[i].want) == NULL) {
      fail_msg("%s: got \"%s\", want \"%s\"", bad[i].yaml, err, bad[i].want);
    }
  }
}

/* SPF and DMARC keys. */
static void test_spf_dmarc(void **state) {
  char path[256], err[512];
  struct config *c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->inbound_checks, 1u);
  assert_int_equal(c->spf_enabled, 1);
  assert_int_equal(c->spf_timeout, 20);
  assert_int_equal(c->dmarc_enabled, 1);
  assert_int_equal(c->dmarc_enforce, 1);
  assert_string_equal(c->dmarc_psl_file,
                      "/usr/share/publicsuffix/public_suffix_list.dat");
  config_free(c);
  c = load_text("inbound_checks: [smtp, submissions]\n"
                "spf:\n  enabled: false\n  timeout: 30\n"
                "dmarc:\n  enforce: false\n  psl_file: /x/psl.dat\n"
                "  overrides: [\"Partner.Example. none\", \"b.test reject\"]\n",
                path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("got error \"%s\", want a config", err);
  }
  assert_int_equal(c->inbound_checks, 5u);
  assert_int_equal(c->spf_enabled, 0);
  assert_int_equal(c->spf_timeout, 30);
  assert_int_equal(c->dmarc_enforce, 0);
  assert_string_equal(c->dmarc_psl_file, "/x/psl.dat");
  assert_int_equal(c->num_dmarc_overrides, 2);
  assert_string_equal(c->dmarc_overrides[0], "partner.example none");
  assert_string_equal(c->dmarc_overrides[1], "b.test reject");
  config_free(c);
  static const struct {
    const char *yaml, *want;
  } bad[] = {
      {"spf:\n  timeout: 0\n", "out of range"},
      {"inbound_checks: [relay]\n", "is not smtp, submission"},
      {"dmarc:\n  overrides: [\"a.test\"]\n", "DOMAIN POLICY"},
      {"dmarc:\n  overrides: [\"a.test deny\"]\n", "DOMAIN POLICY"},
      {"dmarc:\n  overrides: [\"a_b.test none\"]\n", "a_b.test"},
      {"dmarc:\n  psl_file: \"\"\n", "must not be empty"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = load_text(bad[i].yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL || strstr(err, bad[i].want) == NULL) {
      fail_msg("%s: got \"%s\", want \"%s\"", bad[i].yaml, err, bad[i].want);
    }
  }
}

/* dmarc.reports and its limits and names: defaults, values, errors. */
static void test_dmarc_reports(void **state) {
  char path[256], err[512];
  struct config *c = config_load(NULL, err, sizeof(err));
  assert_non_null(c);
  assert_int_equal(c->dmarc_reports, 1);
  assert_int_equal(c->dmarc_report_interval, 86400);
  assert_int_equal(c->dmarc_report_max_domains, 10000);
  assert_string_equal(c->dmarc_report_org_name, "");
  assert_string_equal(c->dmarc_report_email, "");
  config_free(c);

  c = load_text("dmarc:\n  reports: false\n  report_interval: 3\n"
                "  report_max_domains: 9\n  report_org_name: Rep.Example.\n"
                "  report_email: dmarc-reports@rep.example\n",
                path, sizeof(path), err, sizeof(err));
  if (c == NULL) {
    fail_msg("got error \"%s\", want a config", err);
  }
  assert_int_equal(c->dmarc_reports, 0);
  assert_int_equal(c->dmarc_report_interval, 3);
  assert_int_equal(c->dmarc_report_max_domains, 9);
  assert_string_equal(c->dmarc_report_org_name, "Rep.Example");
  assert_string_equal(c->dmarc_report_email, "dmarc-reports@rep.example");
  config_free(c);

  static const struct {
    const char *yaml, *want;
  } bad[] = {
      {"dmarc:\n  reports: maybe\n", "is not true or false"},
      {"dmarc:\n  report_interval: 0\n", "out of range"},
      {"dmarc:\n  report_interval: 604801\n", "out of range"},
      {"dmarc:\n  report_max_domains: 0\n", "out of range"},
      {"dmarc:\n  report_org_name: \"Acme Corp\"\n", "not a valid host"},
      {"dmarc:\n  report_email: postmaster\n", "not a plain mail address"},
      {"dmarc:\n  report_email: \"a b@x.test\"\n", "not a plain mail"},
      {"dmarc:\n  report_email: \"<a@x.test>\"\n", "not a plain mail"},
      {"dmarc:\n  report_email: a..b@x.test\n", "not a plain mail"},
      {"dmarc:\n  report_email: a@x_y.test\n", "not a plain mail"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    c = load_text(bad[i].yaml, path, sizeof(path), err, sizeof(err));
    if (c != NULL || strstr(err, bad[i].want) == NULL) {
      fail_msg("%s: got \"%s\", want \"%s\"", bad[i].yaml, err, bad[i].want);
    }
  }
}

static void test_free_null(void **state) {
  config_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_defaults, clear_env),
      cmocka_unit_test_setup(test_full_file, clear_env),
      cmocka_unit_test_setup(test_partial_and_empty_files, clear_env),
      cmocka_unit_test_setup(test_file_errors, clear_env),
      cmocka_unit_test_setup(test_too_many_entries, clear_env),
      cmocka_unit_test_setup(test_missing_file, clear_env),
      cmocka_unit_test_setup(test_size_suffixes, clear_env),
      cmocka_unit_test_setup(test_env_overrides, clear_env),
      cmocka_unit_test_setup(test_env_errors, clear_env),
      cmocka_unit_test_setup(test_env_blank_lists, clear_env),
      cmocka_unit_test_setup(test_domain_match, clear_env),
      cmocka_unit_test_setup(test_deploy_example, clear_env),
      cmocka_unit_test_setup(test_tls_and_auth, clear_env),
      cmocka_unit_test_setup(test_tls_reports, clear_env),
      cmocka_unit_test_setup(test_dkim, clear_env),
      cmocka_unit_test_setup(test_spf_dmarc, clear_env),
      cmocka_unit_test_setup(test_smime, clear_env),
      cmocka_unit_test_setup(test_throttle, clear_env),
      cmocka_unit_test_setup(test_dmarc_reports, clear_env),
      cmocka_unit_test(test_free_null),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
