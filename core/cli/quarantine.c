/* core/cli/quarantine.c — `postseal quarantine list|show|release|delete`.
 *
 * Quarantine is a held state in the spool: postseald stages a message
 * that DMARC says to quarantine together with a HOLD record, and the
 * message carries the reason in its own Authentication-Results field
 * (postseald's verdict on top: "dmarc=fail (p=quarantine
 * dis=quarantine) header.from=..."). So a quarantined message is a held
 * message whose top Authentication-Results field says dis=quarantine;
 * list reads the spool (safe while postseald runs), show writes the
 * message, release and delete are `postseal queue release|delete` on
 * those ids (through postseald's control socket, or the spool when it is
 * stopped). A message an operator held by hand is not in quarantine. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/cli/cli.h"

/* quarantine_reason finds the reason in the message's first
 * Authentication-Results field (ours: the daemon puts it on top, above
 * its Received:): the "dmarc=..." result with dis=quarantine. Writes it,
 * unfolded, into out and returns 1; 0 if the message is not quarantined. */
static int quarantine_reason(const uint8_t *m, size_t len, char *out,
                             size_t out_len) {
  static const char name[] = "Authentication-Results:";
  size_t nl = sizeof(name) - 1, i = 0;
  while (i < len && m[i] != '\r' && m[i] != '\n') {
    const uint8_t *lf = memchr(m + i, '\n', len - i);
    size_t end = lf ? (size_t)(lf - m) + 1 : len;
    while (end < len && (m[end] == ' ' || m[end] == '\t')) {
      lf = memchr(m + end, '\n', len - end);
      end = lf ? (size_t)(lf - m) + 1 : len;
    }
    if (end - i > nl && strncasecmp((const char *)m + i, name, nl) == 0) {
      char field[2048];
      size_t n = 0;
      for (size_t k = i + nl; k < end && n + 1 < sizeof(field); k++) {
        char ch = (char)m[k];
        if (ch == '\r' || ch == '\n' || ch == '\t') {
          ch = ' ';
        }
        if (ch == ' ' && n > 0 && field[n - 1] == ' ') {
          continue;
        }
        field[n++] = ch;
      }
      field[n] = '\0';
      const char *d = strstr(field, "dmarc=");
      if (d == NULL || strstr(d, "dis=quarantine") == NULL) {
        return 0;
      }
      size_t k = strcspn(d, ";");
      while (k > 0 && d[k - 1] == ' ') {
        k--;
      }
      snprintf(out, out_len, "%.*s", (int)k, d);
      return 1;
    }
    i = end;
  }
  return 0;
}

/* quarantine_collect walks the held messages; for each quarantined one
 * calls fn. Returns the number that could not be read. */
static size_t
quarantine_walk(const char *spool_dir, const struct spool_scan *scan,
                void (*fn)(void *arg, const struct spool_entry *e,
                           const struct spool_message *m, const char *reason),
                void *arg) {
  struct buf storage = {0}, rcpts = {0};
  size_t failed = 0;
  for (size_t i = 0; i < scan->num_entries; i++) {
    const struct spool_entry *e = &scan->entries[i];
    struct spool_message m;
    char reason[512];
    if (!e->held || e->num_done >= e->num_rcpts) {
      continue;
    }
    if (spool_read_message(spool_dir, e, &storage, &m, &rcpts) != 0) {
      char id[SPOOL_QUEUE_ID_LEN + 1];
      spool_queue_id_format(e->queue_id, id);
      fprintf(stderr, "postseal: %s: cannot read seg/%s: %s\n", id, e->segment,
              strerror(errno));
      failed++;
      continue;
    }
    if (quarantine_reason(m.body, m.body_len, reason, sizeof(reason))) {
      fn(arg, e, &m, reason);
    }
  }
  buf_free(&storage);
  buf_free(&rcpts);
  return failed;
}

struct list_state {
  int json;
  size_t num;
  int64_t now_ms;
};

static void list_one(void *arg, const struct spool_entry *e,
                     const struct spool_message *m, const char *reason) {
  struct list_state *st = arg;
  char id[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(e->queue_id, id);
  int64_t age = (st->now_ms - e->arrival_ms) / 1000;
  if (st->json) {
    printf("{\"queue_id\":\"%s\",\"size\":%" PRIu64 ",\"age_seconds\":%" PRId64
           ",\"sender\":",
           id, e->body_len, age > 0 ? age : 0);
    cli_json_string(stdout, m->sender);
    printf(",\"client\":");
    cli_json_string(stdout, m->client_addr);
    printf(",\"reason\":");
    cli_json_string(stdout, reason);
    printf("}\n");
  } else {
    printf("%s %10" PRIu64 "  ", id, e->body_len);
    cli_text_string(stdout, m->sender[0] ? m->sender : "<>");
    printf("  from [");
    cli_text_string(stdout, m->client_addr);
    printf("]\n%17s", "");
    cli_text_string(stdout, reason);
    printf("\n");
  }
  st->num++;
}

static int quarantine_list(int argc, char **argv) {
  struct queue_opts o;
  int rc = queue_opts_parse(argc, argv, QOPT_JSON, 0, 0, &o);
  if (rc != 0) {
    fprintf(stderr, "usage: postseal quarantine list [--json] [SPOOL]\n");
    return rc;
  }
  struct spool_scan scan;
  if (queue_scan(o.spool_dir, &scan) != 0) {
    queue_opts_free(&o);
    return CLI_FAIL;
  }
  struct list_state st = {.json = o.json, .now_ms = cli_now_ms()};
  size_t failed = quarantine_walk(o.spool_dir, &scan, list_one, &st);
  if (!o.json) {
    printf(st.num == 0 ? "Quarantine is empty\n"
                       : "-- %zu message%s in quarantine.\n",
           st.num, st.num == 1 ? "" : "s");
  }
  spool_scan_free(&scan);
  queue_opts_free(&o);
  return fflush(stdout) != 0 || failed ? CLI_FAIL : CLI_OK;
}

struct find_state {
  uint64_t id;
  int found;
};

static void find_one(void *arg, const struct spool_entry *e,
                     const struct spool_message *m, const char *reason) {
  (void)m;
  (void)reason;
  struct find_state *st = arg;
  st->found |= e->queue_id == st->id;
}

/* quarantine_check: every id names a message in quarantine (so release
 * and delete cannot touch other held or queued mail by mistake). */
static int quarantine_check(const struct queue_opts *o) {
  struct spool_scan scan;
  if (queue_scan(o->spool_dir, &scan) != 0) {
    return CLI_FAIL;
  }
  int rc = CLI_OK;
  for (int i = 0; i < o->num_args && rc == CLI_OK; i++) {
    struct find_state st = {0};
    if (!spool_queue_id_parse(o->args[i], &st.id)) {
      fprintf(stderr, "postseal: '%s' is not a queue id (16 hex digits)\n",
              o->args[i]);
      rc = CLI_FAIL;
      break;
    }
    (void)quarantine_walk(o->spool_dir, &scan, find_one, &st);
    if (!st.found) {
      fprintf(stderr, "postseal: %s: not in quarantine\n", o->args[i]);
      rc = CLI_FAIL;
    }
  }
  spool_scan_free(&scan);
  return rc;
}

int cmd_quarantine(int argc, char **argv) {
  static const char usage[] =
      "usage:\n"
      "  postseal quarantine list [--json] [SPOOL]\n"
      "      messages DMARC put in quarantine, with the reason\n"
      "  postseal quarantine show QUEUE_ID [SPOOL]\n"
      "      write one to stdout\n"
      "  postseal quarantine release QUEUE_ID... [SPOOL] [--socket PATH]\n"
      "      deliver them after all\n"
      "  postseal quarantine delete QUEUE_ID... [SPOOL] [--socket PATH]\n"
      "      drop them\n";
  if (argc < 2 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "--help") == 0) {
    fputs(usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  const char *verb = argv[1];
  if (strcmp(verb, "list") == 0) {
    return quarantine_list(argc - 1, argv + 1);
  }
  if (strcmp(verb, "show") == 0 || strcmp(verb, "release") == 0 ||
      strcmp(verb, "delete") == 0) {
    int show = strcmp(verb, "show") == 0;
    struct queue_opts o;
    int rc = queue_opts_parse(argc - 1, argv + 1, show ? 0 : QOPT_SOCKET, 1,
                              show ? 1 : 1000, &o);
    if (rc != 0) {
      fputs(usage, stderr);
      return rc;
    }
    rc = quarantine_check(&o);
    queue_opts_free(&o);
    if (rc != CLI_OK) {
      return rc;
    }
    /* The same arguments, as the queue command's. */
    argv[1] = show ? "cat" : (char *)verb;
    return show ? cmd_queue_cat(argc - 1, argv + 1)
           : strcmp(verb, "release") == 0
               ? cmd_queue_release(argc - 1, argv + 1)
               : cmd_queue_delete(argc - 1, argv + 1);
  }
  fprintf(stderr, "postseal: quarantine: unknown verb '%s'\n%s", verb, usage);
  return CLI_USAGE;
}
