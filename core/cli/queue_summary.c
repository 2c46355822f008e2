/* core/cli/queue_summary.c — `postseal queue summary`, after Postfix's
 * qshape: pending recipients by destination domain (rows) and by the age of
 * their message (columns), with how many of them are held.
 *
 * Read-only: a scan without repair, then each pending message's record is
 * read for its recipients; safe while postseald runs. Memory: one small
 * record per pending recipient (its domain copied once per recipient).
 *
 * Rows: TOTAL, the SUMMARY_TOP domains with the most pending recipients
 * (ties by name), then "other" for the rest. Columns: T (all), then age
 * buckets by the message's arrival: under 5m, 5m to under 10m, ... 640m to
 * under 1280m ("1280m"), and 1280m or more ("1280m+"); then held. A
 * recipient address without '@' counts under "(none)". Domains are
 * compared in ASCII lower case. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/cli/cli.h"
#include "core/spool.h"

#define SUMMARY_TOP 20
#define SUMMARY_BUCKETS 10 /* 9 doubling limits from 5 minutes, then more */
#define SUMMARY_FIRST_LIMIT_MS (5 * 60 * 1000)
#define SUMMARY_NO_DOMAIN "(none)"

static const char *const bucket_names[SUMMARY_BUCKETS] = {
    "5m", "10m", "20m", "40m", "80m", "160m", "320m", "640m", "1280m", "1280m+",
};

/* One pending recipient, as counted. */
struct sum_rcpt {
  char *domain;
  uint8_t bucket;
  uint8_t held;
};

/* One row of the table. */
struct sum_row {
  const char *domain;
  uint64_t total;
  uint64_t held;
  uint64_t ages[SUMMARY_BUCKETS];
};

struct summary {
  struct sum_rcpt *rcpts;
  size_t num_rcpts;
  size_t cap_rcpts;
  struct sum_row *rows; /* one per domain, largest first */
  size_t num_rows;
  struct sum_row total;
  struct sum_row other;
  size_t num_messages;
  size_t num_held_messages;
};

/* age_bucket maps a message's age to its column. */
static uint8_t age_bucket(int64_t age_ms) {
  int64_t limit = SUMMARY_FIRST_LIMIT_MS;
  for (uint8_t b = 0; b + 1 < SUMMARY_BUCKETS; b++, limit *= 2) {
    if (age_ms < limit) {
      return b;
    }
  }
  return SUMMARY_BUCKETS - 1;
}

/* domain_of copies the domain of addr (after the last '@'), lower-cased. */
static char *domain_of(const char *addr) {
  const char *at = strrchr(addr, '@');
  char *d = strdup(at && at[1] ? at + 1 : SUMMARY_NO_DOMAIN);
  for (char *p = d; p && *p; p++) {
    if (*p >= 'A' && *p <= 'Z') {
      *p = (char)(*p - 'A' + 'a');
    }
  }
  return d;
}

static int sum_add_rcpt(struct summary *s, const char *addr, uint8_t bucket,
                        uint8_t held) {
  if (s->num_rcpts == s->cap_rcpts) {
    size_t cap = s->cap_rcpts ? s->cap_rcpts * 2 : 256;
    struct sum_rcpt *p = realloc(s->rcpts, cap * sizeof *p);
    if (p == NULL) {
      return -1;
    }
    s->rcpts = p;
    s->cap_rcpts = cap;
  }
  char *d = domain_of(addr);
  if (d == NULL) {
    return -1;
  }
  s->rcpts[s->num_rcpts++] = (struct sum_rcpt){d, bucket, held};
  return 0;
}

/* sum_add_message counts the pending recipients of one entry. Returns 0,
 * 1 if its record could not be read (reported), -1 out of memory. */
static int sum_add_message(struct summary *s, const char *dir,
                           const struct spool_scan *scan,
                           const struct spool_entry *e, int64_t now_ms,
                           struct buf *storage, struct buf *rcpts) {
  struct spool_message m;
  if (spool_read_message(dir, e, storage, &m, rcpts) != 0) {
    char id[SPOOL_QUEUE_ID_LEN + 1];
    spool_queue_id_format(e->queue_id, id);
    fprintf(stderr, "postseal: %s: cannot read seg/%s: %s\n", id, e->segment,
            strerror(errno));
    return 1;
  }
  int64_t age = now_ms - e->arrival_ms;
  uint8_t bucket = age_bucket(age > 0 ? age : 0);
  for (size_t i = 0; i < m.num_rcpts; i++) {
    if (!spool_scan_rcpt_done(scan, e->queue_id, (uint32_t)i) &&
        sum_add_rcpt(s, m.rcpts[i].addr, bucket, e->held) != 0) {
      return -1;
    }
  }
  s->num_messages++;
  s->num_held_messages += e->held;
  return 0;
}

static int rcpt_cmp(const void *a, const void *b) {
  return strcmp(((const struct sum_rcpt *)a)->domain,
                ((const struct sum_rcpt *)b)->domain);
}

static int row_cmp(const void *a, const void *b) {
  const struct sum_row *x = a, *y = b;
  if (x->total != y->total) {
    return x->total > y->total ? -1 : 1;
  }
  return strcmp(x->domain, y->domain);
}

static void row_count(struct sum_row *r, const struct sum_rcpt *rc) {
  r->total++;
  r->held += rc->held;
  r->ages[rc->bucket]++;
}

static void row_add(struct sum_row *to, const struct sum_row *from) {
  to->total += from->total;
  to->held += from->held;
  for (size_t b = 0; b < SUMMARY_BUCKETS; b++) {
    to->ages[b] += from->ages[b];
  }
}

/* sum_rows folds the recipients into rows per domain, largest first, and
 * the TOTAL and "other" rows. */
static int sum_rows(struct summary *s) {
  if (s->num_rcpts > 1) {
    qsort(s->rcpts, s->num_rcpts, sizeof *s->rcpts, rcpt_cmp);
  }
  s->rows = calloc(s->num_rcpts + 1, sizeof *s->rows);
  if (s->rows == NULL) {
    return -1;
  }
  for (size_t i = 0; i < s->num_rcpts; i++) {
    const struct sum_rcpt *rc = &s->rcpts[i];
    if (s->num_rows == 0 ||
        strcmp(s->rows[s->num_rows - 1].domain, rc->domain) != 0) {
      s->rows[s->num_rows++].domain = rc->domain;
    }
    row_count(&s->rows[s->num_rows - 1], rc);
    row_count(&s->total, rc);
  }
  if (s->num_rows > 1) {
    qsort(s->rows, s->num_rows, sizeof *s->rows, row_cmp);
  }
  s->total.domain = "TOTAL";
  s->other.domain = "other";
  for (size_t i = SUMMARY_TOP; i < s->num_rows; i++) {
    row_add(&s->other, &s->rows[i]);
  }
  return 0;
}

/* ---- output ---- */

static void text_row(const struct sum_row *r, int width) {
  /* Right-aligned by hand: the domain goes through cli_text_string, which
   * keeps its length (one byte for one byte). */
  int pad = width - (int)strlen(r->domain);
  printf("%*s", pad > 0 ? pad : 0, "");
  cli_text_string(stdout, r->domain);
  printf(" %7" PRIu64, r->total);
  for (size_t b = 0; b < SUMMARY_BUCKETS; b++) {
    printf(" %6" PRIu64, r->ages[b]);
  }
  printf(" %6" PRIu64 "\n", r->held);
}

static void text_table(const struct summary *s) {
  size_t shown = s->num_rows < SUMMARY_TOP ? s->num_rows : SUMMARY_TOP;
  int width = (int)strlen(s->total.domain);
  for (size_t i = 0; i < shown; i++) {
    int n = (int)strlen(s->rows[i].domain);
    width = n > width ? n : width;
  }
  printf("%*s %7s", width, "", "T");
  for (size_t b = 0; b < SUMMARY_BUCKETS; b++) {
    printf(" %6s", bucket_names[b]);
  }
  printf(" %6s\n", "held");
  text_row(&s->total, width);
  for (size_t i = 0; i < shown; i++) {
    text_row(&s->rows[i], width);
  }
  if (s->num_rows > shown) {
    text_row(&s->other, width);
  }
}

/* json_row_fields prints a row's counts as object members. */
static void json_row_fields(const struct sum_row *r) {
  printf("\"recipients\":%" PRIu64 ",\"held\":%" PRIu64 ",\"ages\":[", r->total,
         r->held);
  for (size_t b = 0; b < SUMMARY_BUCKETS; b++) {
    printf("%s%" PRIu64, b ? "," : "", r->ages[b]);
  }
  printf("]");
}

/* json_table prints one object: bucket names, totals, the top domains and
 * the rest ("other", with how many domains it holds). */
static void json_table(const struct summary *s) {
  size_t shown = s->num_rows < SUMMARY_TOP ? s->num_rows : SUMMARY_TOP;
  printf("{\"buckets\":[");
  for (size_t b = 0; b < SUMMARY_BUCKETS; b++) {
    printf("%s\"%s\"", b ? "," : "", bucket_names[b]);
  }
  printf("],\"messages\":%zu,\"held_messages\":%zu,\"total\":{",
         s->num_messages, s->num_held_messages);
  json_row_fields(&s->total);
  printf("},\"domains\":[");
  for (size_t i = 0; i < shown; i++) {
    printf("%s{\"domain\":", i ? "," : "");
    cli_json_string(stdout, s->rows[i].domain);
    printf(",");
    json_row_fields(&s->rows[i]);
    printf("}");
  }
  printf("],\"other\":{\"domains\":%zu,", s->num_rows - shown);
  json_row_fields(&s->other);
  printf("}}\n");
}

static void summary_free(struct summary *s) {
  for (size_t i = 0; i < s->num_rcpts; i++) {
    free(s->rcpts[i].domain);
  }
  free(s->rcpts);
  free(s->rows);
}

/* summary_collect reads every pending message. Returns the number that
 * could not be read, or -1 out of memory (reported). */
static long summary_collect(struct summary *s, const char *dir,
                            const struct spool_scan *scan) {
  struct buf storage = {0}, rcpts = {0};
  int64_t now = cli_now_ms();
  long failed = 0;
  for (size_t i = 0; i < scan->num_entries && failed >= 0; i++) {
    const struct spool_entry *e = &scan->entries[i];
    if (e->num_done >= e->num_rcpts ||
        (i > 0 && scan->entries[i - 1].queue_id == e->queue_id)) {
      continue;
    }
    int r = sum_add_message(s, dir, scan, e, now, &storage, &rcpts);
    failed = r < 0 ? -1 : failed + r;
  }
  buf_free(&storage);
  buf_free(&rcpts);
  if (failed < 0 || sum_rows(s) != 0) {
    fprintf(stderr, "postseal: out of memory\n");
    return -1;
  }
  return failed;
}

int cmd_queue_summary(int argc, char **argv) {
  struct queue_opts o;
  int rc = queue_opts_parse(argc, argv, QOPT_JSON, 0, 0, &o);
  if (rc != 0) {
    if (rc == CLI_USAGE) {
      queue_usage(stderr);
    }
    queue_opts_free(&o);
    return rc;
  }
  struct spool_scan scan;
  struct summary s = {0};
  long failed = -1;
  if (queue_scan(o.spool_dir, &scan) == 0) {
    failed = summary_collect(&s, o.spool_dir, &scan);
    spool_scan_free(&scan);
  }
  if (failed >= 0 && o.json) {
    json_table(&s);
  } else if (failed >= 0) {
    text_table(&s);
  }
  summary_free(&s);
  queue_opts_free(&o);
  return fflush(stdout) != 0 || failed != 0 ? CLI_FAIL : CLI_OK;
}
