/* core/cli/postseal.c — `postseal`, the operator command line.
 *
 * Commands live in tables (struct cli_cmd): a top-level table and one per
 * command group (`queue`), so new verbs (keygen, check-config, ...) are a
 * function and a table row. Exit status: 0 success, 1 failure (the reason
 * on stderr), 2 usage error (usage on stderr).
 *
 * The reading queue commands (list, cat, summary) scan without repair, so
 * they are safe while the daemon runs (a record being written reads as a
 * torn tail and is left alone). The changing ones (delete, hold, release,
 * flush) are in queue_ops.c. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/cli/cli.h"
#include "core/cli/cli_resolve.h"
#include "core/config.h"
#include "core/spool.h"

#ifndef POSTSEAL_VERSION
#define POSTSEAL_VERSION "0.1.0"
#endif

struct cli_cmd {
  const char *name;
  const char *args;    /* argument synopsis for the usage text */
  const char *summary; /* one line */
  /* argv[0] is the command's own name. */
  int (*run)(int argc, char **argv);
};

static int cmd_queue(int argc, char **argv);
static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);
static int cmd_queue_list(int argc, char **argv);

static const struct cli_cmd cli_commands[] = {
    {"queue", "list|cat|summary|delete|hold|release|flush|export|import ...",
     "inspect and manage the mail queue", cmd_queue},
    {"resolve", "mx|host|txt|tlsa|mta-sts NAME [--server IP:PORT]... [--json]",
     "look up delivery routes, records and MTA-STS policies", cli_resolve},
    {"keygen",
     "--domain D --selector S [--algorithm rsa|ed25519] [--bits N] "
     "[--out FILE|--dir DIR]",
     "make a DKIM key (D.S.key) and print the TXT record to publish",
     cmd_keygen},
    {"quarantine", "list|show|release|delete ...",
     "messages DMARC put in quarantine (held, with the reason)",
     cmd_quarantine},
    {"smime", "sign|encrypt|verify|decrypt ...",
     "S/MIME (RFC 8551): sign, encrypt, verify and decrypt messages",
     cmd_smime},
    {"version", "", "print the version", cmd_version},
    {"help", "", "print this help", cmd_help},
};

static const struct cli_cmd queue_commands[] = {
    {"list", "[--json] [SPOOL]",
     "list queued messages, '!' after the id if held (--json: one object "
     "per line)",
     cmd_queue_list},
    {"cat", "QUEUE_ID [SPOOL]", "write a queued message to stdout",
     cmd_queue_cat},
    {"summary", "[--json] [SPOOL]",
     "pending recipients by domain and age, like qshape (read-only)",
     cmd_queue_summary},
    {"delete", "QUEUE_ID...|--all [SPOOL] [--socket PATH]",
     "delete messages: every pending recipient is finished", cmd_queue_delete},
    {"hold", "QUEUE_ID...|--all [SPOOL] [--socket PATH]",
     "put messages on hold: not delivered until released", cmd_queue_hold},
    {"release", "QUEUE_ID...|--all [SPOOL] [--socket PATH]",
     "release held messages", cmd_queue_release},
    {"flush", "[QUEUE_ID...|--domain DOMAIN] [SPOOL] [--socket PATH]",
     "ask postseald to try deferred messages now", cmd_queue_flush},
    {"export", "[SPOOL] [--out FILE|-] [--ids ID,...] [--remove]",
     "write unfinished messages to an archive (postseald stopped); "
     "--remove: finish them here",
     cmd_queue_export},
    {"import", "[SPOOL] [--in FILE|-] [--socket PATH]",
     "queue an archive's messages under new ids (through postseald, or "
     "the spool when it is stopped)",
     cmd_queue_import},
};

#define NUM(a) (sizeof(a) / sizeof((a)[0]))

/* ---- usage and dispatch ---- */

static void print_table(FILE *f, const char *prefix, const struct cli_cmd *cmds,
                        size_t num) {
  for (size_t i = 0; i < num; i++) {
    fprintf(f, "  %s%s%s%s\n      %s\n", prefix, cmds[i].name,
            cmds[i].args[0] ? " " : "", cmds[i].args, cmds[i].summary);
  }
}

static void usage(FILE *f) {
  fprintf(f, "usage: postseal COMMAND [ARGS]\n\ncommands:\n");
  print_table(f, "postseal ", cli_commands, NUM(cli_commands));
  fprintf(f,
          "\nSPOOL is -d|--spool SPOOL_DIR, or -c|--config CONFIG (its "
          "spool_dir and\ncontrol_socket); else $POSTSEAL_SPOOL_DIR, else "
          "\"%s\".\n"
          "delete, hold and release go to postseald's control socket "
          "(default\nSPOOL_DIR/%s); when postseald is stopped they write "
          "the spool directly.\n",
          CLI_DEFAULT_SPOOL_DIR, CLI_CONTROL_NAME);
}

void queue_usage(FILE *f) {
  fprintf(f, "usage:\n");
  print_table(f, "postseal queue ", queue_commands, NUM(queue_commands));
}

static int is_help(const char *arg) {
  return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0 ||
         strcmp(arg, "help") == 0;
}

/* dispatch runs the command named argv[0] from cmds, or returns -1. */
static int dispatch(const struct cli_cmd *cmds, size_t num, int argc,
                    char **argv) {
  for (size_t i = 0; i < num; i++) {
    if (strcmp(argv[0], cmds[i].name) == 0) {
      return cmds[i].run(argc, argv);
    }
  }
  return -1;
}

static int cmd_help(int argc, char **argv) {
  usage(stdout);
  return CLI_OK;
}

static int cmd_version(int argc, char **argv) {
  if (argc > 1) {
    usage(stderr);
    return CLI_USAGE;
  }
  printf("postseal %s\n", POSTSEAL_VERSION);
  return CLI_OK;
}

static int cmd_queue(int argc, char **argv) {
  if (argc < 2) {
    queue_usage(stderr);
    return CLI_USAGE;
  }
  if (is_help(argv[1])) {
    queue_usage(stdout);
    return CLI_OK;
  }
  int rc = dispatch(queue_commands, NUM(queue_commands), argc - 1, argv + 1);
  if (rc < 0) {
    fprintf(stderr, "postseal: unknown queue command '%s'\n", argv[1]);
    queue_usage(stderr);
    return CLI_USAGE;
  }
  return rc;
}

/* opt_value matches option `a` against a short name (may be NULL) and a
 * long one, as "NAME VALUE" or "--long=VALUE". Returns 1 with *out set
 * (and *i advanced past a separate value), 0 if `a` is another option, -1
 * if the value is missing (reason printed). */
static int opt_value(int argc, char **argv, int *i, const char *short_name,
                     const char *long_name, const char **out) {
  const char *a = argv[*i];
  size_t n = strlen(long_name);
  if (strncmp(a, long_name, n) == 0 && a[n] == '=') {
    *out = a + n + 1;
    return 1;
  }
  if (strcmp(a, long_name) != 0 &&
      (short_name == NULL || strcmp(a, short_name) != 0)) {
    return 0;
  }
  if (*i + 1 == argc) {
    fprintf(stderr, "postseal: %s needs a value\n", a);
    return -1;
  }
  *out = argv[++*i];
  return 1;
}

/* opts_from_config fills what -c CONFIG gives and the command line did
 * not: spool_dir and control_socket (a value of "" there leaves the socket
 * NULL and sets *out_socket_set). Returns 0 or CLI_FAIL. */
static int opts_from_config(struct queue_opts *o, const char *path,
                            int have_dir, int *out_socket_set) {
  char err[CLI_ERR_LEN] = "";
  struct config *cfg = config_load(path, err, sizeof err);
  if (cfg == NULL) {
    fprintf(stderr, "postseal: %s\n", err[0] ? err : path);
    return CLI_FAIL;
  }
  int rc = 0;
  if (!have_dir) {
    o->owned_spool_dir = strdup(cfg->spool_dir);
    rc |= o->owned_spool_dir == NULL;
    o->spool_dir = o->owned_spool_dir;
  }
  if (!*out_socket_set && cfg->control_socket != NULL) {
    *out_socket_set = 1;
    if (cfg->control_socket[0] != '\0') { /* "" switches it off */
      o->owned_socket = strdup(cfg->control_socket);
      rc |= o->owned_socket == NULL;
      o->socket_path = o->owned_socket;
    }
  }
  config_free(cfg);
  if (rc != 0) {
    fprintf(stderr, "postseal: out of memory\n");
    return CLI_FAIL;
  }
  return 0;
}

/* opts_default_socket sets the socket to <spool_dir>/control. */
static int opts_default_socket(struct queue_opts *o) {
  size_t n = strlen(o->spool_dir) + sizeof("/" CLI_CONTROL_NAME);
  o->owned_socket = malloc(n);
  if (o->owned_socket == NULL) {
    fprintf(stderr, "postseal: out of memory\n");
    return CLI_FAIL;
  }
  snprintf(o->owned_socket, n, "%s/%s", o->spool_dir, CLI_CONTROL_NAME);
  o->socket_path = o->owned_socket;
  return 0;
}

/* opts_one takes argv[*i]. Returns 0, or CLI_USAGE (reason printed). */
static int opts_one(int argc, char **argv, int *i, unsigned flags,
                    struct queue_opts *o, const char **config) {
  const char *a = argv[*i];
  int r;
  if ((r = opt_value(argc, argv, i, "-d", "--spool-dir", &o->spool_dir)) ||
      (r = opt_value(argc, argv, i, NULL, "--spool", &o->spool_dir)) ||
      (r = opt_value(argc, argv, i, "-c", "--config", config))) {
    return r < 0 ? CLI_USAGE : 0;
  }
  if ((flags & QOPT_SOCKET) &&
      (r = opt_value(argc, argv, i, NULL, "--socket", &o->socket_path))) {
    return r < 0 ? CLI_USAGE : 0;
  }
  if ((flags & QOPT_DOMAIN) &&
      (r = opt_value(argc, argv, i, NULL, "--domain", &o->domain))) {
    return r < 0 ? CLI_USAGE : 0;
  }
  if ((flags & QOPT_JSON) && strcmp(a, "--json") == 0) {
    o->json = 1;
  } else if ((flags & QOPT_ALL) && strcmp(a, "--all") == 0) {
    o->all = 1;
  } else if (a[0] != '-' || strcmp(a, "-") == 0) {
    o->args[o->num_args++] = argv[*i];
  } else {
    fprintf(stderr, "postseal: queue %s: unknown option '%s'\n", argv[0], a);
    return CLI_USAGE;
  }
  return 0;
}

int queue_opts_parse(int argc, char **argv, unsigned flags, int min_args,
                     int max_args, struct queue_opts *out) {
  const char *env = getenv("POSTSEAL_SPOOL_DIR");
  const char *config = NULL;
  *out = (struct queue_opts){0};
  out->args = calloc((size_t)argc, sizeof *out->args);
  if (out->args == NULL) {
    fprintf(stderr, "postseal: out of memory\n");
    return CLI_FAIL;
  }
  for (int i = 1; i < argc; i++) {
    int rc = opts_one(argc, argv, &i, flags, out, &config);
    if (rc != 0) {
      return rc;
    }
  }
  if (out->num_args < min_args || (max_args >= 0 && out->num_args > max_args)) {
    fprintf(stderr, "postseal: queue %s: %s\n", argv[0],
            out->num_args < min_args ? "missing argument"
                                     : "too many arguments");
    return CLI_USAGE;
  }
  int have_dir = out->spool_dir != NULL, socket_set = out->socket_path != NULL;
  if (config != NULL &&
      opts_from_config(out, config, have_dir, &socket_set) != 0) {
    return CLI_FAIL;
  }
  if (out->spool_dir == NULL) {
    out->spool_dir = env && *env ? env : CLI_DEFAULT_SPOOL_DIR;
  }
  return socket_set ? 0 : opts_default_socket(out);
}

void queue_opts_free(struct queue_opts *o) {
  free(o->args);
  free(o->owned_spool_dir);
  free(o->owned_socket);
  *o = (struct queue_opts){0};
}

/* queue_opts_parse_or_usage: queue_opts_parse, printing the usage after a
 * usage error. */
static int queue_opts_parse_or_usage(int argc, char **argv, unsigned flags,
                                     int min_args, int max_args,
                                     struct queue_opts *out) {
  int rc = queue_opts_parse(argc, argv, flags, min_args, max_args, out);
  if (rc == CLI_USAGE) {
    queue_usage(stderr);
  }
  if (rc != 0) {
    queue_opts_free(out);
  }
  return rc;
}

int queue_scan(const char *dir, struct spool_scan *out) {
  char err[CLI_ERR_LEN] = "";
  if (spool_scan(dir, 0, out, err, sizeof err) != 0) {
    fprintf(stderr, "postseal: spool %s: %s\n", dir,
            err[0] ? err : strerror(errno));
    return -1;
  }
  return 0;
}

/* ---- output helpers ---- */

int64_t cli_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* format_rfc3339 writes ms as "YYYY-MM-DDTHH:MM:SSZ" (UTC). */
static void format_rfc3339(int64_t ms, char *out, size_t out_len) {
  time_t secs = (time_t)(ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000));
  struct tm tm;
  if (gmtime_r(&secs, &tm) == NULL ||
      strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
    snprintf(out, out_len, "invalid");
  }
}

/* format_age writes a short duration: 42s, 5m, 3h12m, 2d03h. */
static void format_age(int64_t secs, char *out, size_t out_len) {
  if (secs < 60) {
    snprintf(out, out_len, "%" PRId64 "s", secs);
  } else if (secs < 3600) {
    snprintf(out, out_len, "%" PRId64 "m", secs / 60);
  } else if (secs < 86400) {
    snprintf(out, out_len, "%" PRId64 "h%02" PRId64 "m", secs / 3600,
             secs % 3600 / 60);
  } else {
    snprintf(out, out_len, "%" PRId64 "d%02" PRId64 "h", secs / 86400,
             secs % 86400 / 3600);
  }
}

/* utf8_seq_len returns the length of the valid UTF-8 sequence at s (n
 * bytes left), or 0 if it is not valid (RFC 3629 §4). */
static size_t utf8_seq_len(const unsigned char *s, size_t n) {
  unsigned char c = s[0];
  size_t len;
  unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
  if (c < 0x80) {
    return 1;
  } else if (c >= 0xc2 && c <= 0xdf) {
    len = 2;
  } else if (c >= 0xe0 && c <= 0xef) {
    len = 3;
    lo = c == 0xe0 ? 0xa0 : 0x80;
    hi = c == 0xed ? 0x9f : 0xbf;
  } else if (c >= 0xf0 && c <= 0xf4) {
    len = 4;
    lo = c == 0xf0 ? 0x90 : 0x80;
    hi = c == 0xf4 ? 0x8f : 0xbf;
  } else {
    return 0;
  }
  if (n < len || s[1] < lo || s[1] > hi) {
    return 0;
  }
  for (size_t i = 2; i < len; i++) {
    if (s[i] < 0x80 || s[i] > 0xbf) {
      return 0;
    }
  }
  return len;
}

int cli_opt(int argc, char **argv, int *i, const char *cmd, const char *name,
            const char **out) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0 || (a[n] != '\0' && a[n] != '=')) {
    return 0;
  }
  if (a[n] == '=') {
    *out = a + n + 1;
    return 1;
  }
  if (*i + 1 == argc) {
    fprintf(stderr, "postseal: %s%s%s needs a value\n", cmd ? cmd : "",
            cmd ? ": " : "", name);
    return -1;
  }
  *out = argv[++*i];
  return 1;
}

/* cli_json_string writes s as a JSON string (RFC 8259 §7): quotes, backslash
 * and controls escaped; invalid UTF-8 becomes U+FFFD so the line stays
 * valid JSON. */
void cli_json_string(FILE *f, const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s);
  fputc('"', f);
  while (n > 0) {
    size_t len = utf8_seq_len(p, n);
    if (len == 0) {
      fputs("\\ufffd", f);
      len = 1;
    } else if (*p == '"' || *p == '\\') {
      fprintf(f, "\\%c", *p);
    } else if (*p == '\n') {
      fputs("\\n", f);
    } else if (*p == '\r') {
      fputs("\\r", f);
    } else if (*p == '\t') {
      fputs("\\t", f);
    } else if (*p < 0x20) {
      fprintf(f, "\\u%04x", *p);
    } else {
      fwrite(p, 1, len, f);
    }
    p += len;
    n -= len;
  }
  fputc('"', f);
}

/* cli_text_string writes s for a terminal: control bytes become '?'. */
void cli_text_string(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, f);
  }
}

/* ---- queue list ---- */

/* A queued message as listed: entry, decoded envelope, time. */
struct queue_item {
  const struct spool_scan *scan;
  const struct spool_entry *entry;
  const struct spool_message *msg;
  int64_t now_ms;
};

static void list_text(const struct queue_item *it) {
  char id[SPOOL_QUEUE_ID_LEN + 1], when[32], age[32];
  spool_queue_id_format(it->entry->queue_id, id);
  format_rfc3339(it->entry->arrival_ms, when, sizeof when);
  int64_t secs = (it->now_ms - it->entry->arrival_ms) / 1000;
  format_age(secs > 0 ? secs : 0, age, sizeof age);
  /* '!' after the id marks a held message, as in Postfix's mailq. */
  printf("%s%c%10" PRIu64 "  %s %7s  ", id, it->entry->held ? '!' : ' ',
         it->entry->body_len, when, age);
  cli_text_string(stdout, it->msg->sender[0] ? it->msg->sender : "<>");
  fputc('\n', stdout);
  for (size_t i = 0; i < it->msg->num_rcpts; i++) {
    if (spool_scan_rcpt_done(it->scan, it->entry->queue_id, (uint32_t)i)) {
      continue;
    }
    printf("%59s", "");
    cli_text_string(stdout, it->msg->rcpts[i].addr);
    fputc('\n', stdout);
  }
  fputc('\n', stdout);
}

static void list_json(const struct queue_item *it) {
  char id[SPOOL_QUEUE_ID_LEN + 1], when[32];
  spool_queue_id_format(it->entry->queue_id, id);
  format_rfc3339(it->entry->arrival_ms, when, sizeof when);
  int64_t secs = (it->now_ms - it->entry->arrival_ms) / 1000;
  printf("{\"queue_id\":\"%s\",\"size\":%" PRIu64
         ",\"arrival_time\":\"%s\",\"age_seconds\":%" PRId64
         ",\"held\":%s,\"sender\":",
         id, it->entry->body_len, when, secs > 0 ? secs : 0,
         it->entry->held ? "true" : "false");
  cli_json_string(stdout, it->msg->sender);
  printf(",\"recipients\":[");
  int first = 1;
  for (size_t i = 0; i < it->msg->num_rcpts; i++) {
    if (spool_scan_rcpt_done(it->scan, it->entry->queue_id, (uint32_t)i)) {
      continue;
    }
    printf(first ? "" : ",");
    cli_json_string(stdout, it->msg->rcpts[i].addr);
    first = 0;
  }
  printf("]}\n");
}

/* list_entries prints every entry not fully done; returns how many failed
 * to read (each reported on stderr). */
static size_t list_entries(const struct queue_opts *o,
                           const struct spool_scan *scan, size_t *out_num,
                           uint64_t *out_bytes) {
  struct buf storage = {0}, rcpts = {0};
  struct queue_item it = {.scan = scan, .now_ms = cli_now_ms()};
  size_t failed = 0;
  for (size_t i = 0; i < scan->num_entries; i++) {
    const struct spool_entry *e = &scan->entries[i];
    struct spool_message m;
    if (e->num_done >= e->num_rcpts) {
      continue;
    }
    if (spool_read_message(o->spool_dir, e, &storage, &m, &rcpts) != 0) {
      char id[SPOOL_QUEUE_ID_LEN + 1];
      spool_queue_id_format(e->queue_id, id);
      fprintf(stderr, "postseal: %s: cannot read seg/%s: %s\n", id, e->segment,
              strerror(errno));
      failed++;
      continue;
    }
    it.entry = e;
    it.msg = &m;
    if (o->json) {
      list_json(&it);
    } else {
      list_text(&it);
    }
    (*out_num)++;
    *out_bytes += e->body_len;
  }
  buf_free(&storage);
  buf_free(&rcpts);
  return failed;
}

static int cmd_queue_list(int argc, char **argv) {
  struct queue_opts o;
  int rc = queue_opts_parse_or_usage(argc, argv, QOPT_JSON, 0, 0, &o);
  if (rc != 0) {
    return rc;
  }
  struct spool_scan scan;
  if (queue_scan(o.spool_dir, &scan) != 0) {
    queue_opts_free(&o);
    return CLI_FAIL;
  }
  if (!o.json) {
    printf("%-16s %10s  %-20s %7s  %s\n", "-Queue ID-", "--Size--",
           "---Arrival Time---", "-Age-", "-Sender/Recipient-");
  }
  size_t num = 0;
  uint64_t bytes = 0;
  size_t failed = list_entries(&o, &scan, &num, &bytes);
  if (!o.json && num == 0) {
    printf("Mail queue is empty\n");
  } else if (!o.json) {
    printf("-- %" PRIu64 " Kbytes in %zu Request%s.\n", (bytes + 1023) / 1024,
           num, num == 1 ? "" : "s");
  }
  spool_scan_free(&scan);
  queue_opts_free(&o);
  return fflush(stdout) != 0 || failed ? CLI_FAIL : CLI_OK;
}

/* ---- queue cat ---- */

static int write_all_stdout(const uint8_t *p, size_t len) {
  if (len > 0 && fwrite(p, 1, len, stdout) != len) {
    return -1;
  }
  return fflush(stdout);
}

int cmd_queue_cat(int argc, char **argv) {
  struct queue_opts o;
  uint64_t id;
  int rc = queue_opts_parse_or_usage(argc, argv, 0, 1, 1, &o);
  if (rc != 0) {
    return rc;
  }
  const char *queue_id = o.args[0];
  struct spool_scan scan;
  if (!spool_queue_id_parse(queue_id, &id)) {
    fprintf(stderr, "postseal: '%s' is not a queue id (16 hex digits)\n",
            queue_id);
    rc = CLI_FAIL;
  } else if (queue_scan(o.spool_dir, &scan) != 0) {
    rc = CLI_FAIL;
  }
  if (rc != 0) {
    queue_opts_free(&o);
    return rc;
  }
  const struct spool_entry *e = spool_scan_find(&scan, id);
  struct buf storage = {0}, rcpts = {0};
  struct spool_message m;
  if (e == NULL) {
    fprintf(stderr, "postseal: %s: no such message in %s\n", queue_id,
            o.spool_dir);
    rc = CLI_FAIL;
  } else if (spool_read_message(o.spool_dir, e, &storage, &m, &rcpts) != 0) {
    fprintf(stderr, "postseal: %s: cannot read seg/%s: %s\n", queue_id,
            e->segment, strerror(errno));
    rc = CLI_FAIL;
  } else if (write_all_stdout(m.body, m.body_len) != 0) {
    fprintf(stderr, "postseal: write: %s\n", strerror(errno));
    rc = CLI_FAIL;
  }
  buf_free(&storage);
  buf_free(&rcpts);
  spool_scan_free(&scan);
  queue_opts_free(&o);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CLI_USAGE;
  }
  if (is_help(argv[1])) {
    usage(stdout);
    return CLI_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    return cmd_version(1, argv + 1);
  }
  int rc = dispatch(cli_commands, NUM(cli_commands), argc - 1, argv + 1);
  if (rc < 0) {
    fprintf(stderr, "postseal: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return CLI_USAGE;
  }
  return rc;
}
