/* core/cli/queue_export.c — `postseal queue export|import`: move the queue
 * of a stopped replica to another postseald, so scaling down strands no
 * mail. The archive format is core/queue_archive.h.
 *
 * export: postseald must be stopped: the CLI takes the spool lock (busy:
 * refused) and keeps it to the end, scans read-only, and writes every
 * unfinished message (or the --ids named) with its open recipients to the
 * archive; a new file (O_EXCL: an older archive may hold the only copy of
 * its mail) or stdout. The archive is fsync'd (and its directory). Only
 * then, with --remove, are the exported recipients finished in this spool:
 * DONE records (outcome deleted) through spool writers, fdatasync'd. A
 * crash between the two steps leaves the mail in both places: delivered
 * twice at worst, never lost. --remove needs an archive that can be made
 * durable: a file, not a pipe.
 *
 * import: the whole archive is checked first (checksums, format, the end
 * record's counts); a bad archive is refused, naming the message and the
 * reason, and nothing is imported. Stdin that cannot be read twice is
 * copied to an unlinked temporary file first. Then, if postseald answers
 * on its control socket, the records go to it in batches (IMPORT, see
 * proto/ctl.h), each checked again and staged through its group commit;
 * otherwise (postseald stopped) the CLI takes the spool lock and writes
 * them with a spool writer, picked up at the next start. Each message gets
 * a new queue id; one line per message maps the old id to the new one.
 * A failure part way (a spool write, a batch over the daemon's limit)
 * stops the import; the lines printed say which messages were queued.
 *
 * Single-threaded, like the rest of the CLI. Limits: QX_BATCH_BYTES and
 * QX_BATCH_MESSAGES per IMPORT request; records up to QARC_MAX_PAYLOAD. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/cli/cli.h"
#include "core/fdio.h"
#include "core/queue_archive.h"
#include "core/spool.h"
#include "proto/ctl.h"

#define QX_BATCH_BYTES ((size_t)16 << 20) /* an IMPORT request's aim */
#define QX_BATCH_MESSAGES 1024            /* messages per IMPORT request */
#define QX_READ_CHUNK ((size_t)1 << 20)
#define QX_COPY_CHUNK 65536
/* Queue id layout (core/spool.h): 42 bits ms, 6 bits thread, 16 counter. */
#define QX_ID_THREAD_SHIFT 16
#define QX_ID_THREAD_MASK 0x3fu

/* One command's arguments. */
struct qx_args {
  struct queue_opts o;
  const char *path; /* --out / --in; "-" for stdout / stdin */
  int remove;       /* --remove */
  uint64_t *ids;    /* --ids, distinct */
  size_t num_ids;
};

/* ---- arguments ---- */

/* qx_opt: cli_opt for export's and import's options. */
static int qx_opt(int argc, char **argv, int *i, const char *name,
                  const char **out) {
  return cli_opt(argc, argv, i, NULL, name, out);
}

/* qx_ids adds the comma-separated queue ids of text. */
static int qx_ids(struct qx_args *a, const char *text) {
  size_t n = 1;
  for (const char *p = text; *p; p++) {
    n += *p == ',';
  }
  uint64_t *ids = realloc(a->ids, (a->num_ids + n) * sizeof *ids);
  if (ids == NULL) {
    fprintf(stderr, "postseal: out of memory\n");
    return CLI_FAIL;
  }
  a->ids = ids;
  for (const char *p = text;;) {
    char one[SPOOL_QUEUE_ID_LEN + 2] = "";
    size_t len = strcspn(p, ",");
    uint64_t id;
    if (len < sizeof one) {
      memcpy(one, p, len);
    }
    if (len >= sizeof one || !spool_queue_id_parse(one, &id)) {
      fprintf(stderr, "postseal: '%.*s' is not a queue id (16 hex digits)\n",
              (int)(len > 64 ? 64 : len), p);
      return CLI_USAGE;
    }
    size_t k = 0;
    while (k < a->num_ids && a->ids[k] != id) {
      k++;
    }
    if (k == a->num_ids) {
      a->ids[a->num_ids++] = id;
    }
    if (p[len] == '\0') {
      return 0;
    }
    p += len + 1;
  }
}

/* qx_own_opt takes argv[*i] if it is one of this command's own options:
 * 1 taken, 0 not ours, or CLI_USAGE / CLI_FAIL (printed) as a negative. */
static int qx_own_opt(struct qx_args *a, int export, int argc, char **argv,
                      int *i) {
  const char *v = NULL;
  int r = qx_opt(argc, argv, i, export ? "--out" : "--in", &v);
  if (r != 0) {
    a->path = v;
    return r < 0 ? -CLI_USAGE : 1;
  }
  if (!export) {
    return 0;
  }
  if ((r = qx_opt(argc, argv, i, "--ids", &v)) != 0) {
    int rc = r < 0 ? CLI_USAGE : qx_ids(a, v);
    return rc != 0 ? -rc : 1;
  }
  if (strcmp(argv[*i], "--remove") == 0) {
    a->remove = 1;
    return 1;
  }
  return 0;
}

/* qx_args_parse takes this command's options out of argv and hands the
 * rest (spool, config, socket) to queue_opts_parse. */
static int qx_args_parse(struct qx_args *a, int export, int argc, char **argv) {
  *a = (struct qx_args){.path = "-"};
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  int num_rest = 0, rc = 0;
  if (rest == NULL) {
    fprintf(stderr, "postseal: out of memory\n");
    return CLI_FAIL;
  }
  rest[num_rest++] = argv[0];
  for (int i = 1; rc == 0 && i < argc; i++) {
    int r = qx_own_opt(a, export, argc, argv, &i);
    if (r < 0) {
      rc = -r;
    } else if (r == 0) {
      rest[num_rest++] = argv[i];
    }
  }
  if (rc == 0) {
    rc =
        queue_opts_parse(num_rest, rest, export ? 0 : QOPT_SOCKET, 0, 0, &a->o);
  }
  free(rest);
  if (rc == CLI_USAGE) {
    queue_usage(stderr);
  }
  return rc;
}

static void qx_args_free(struct qx_args *a) {
  free(a->ids);
  queue_opts_free(&a->o);
}

/* ---- files ---- */

/* fsync_dir_of makes the directory entry of path durable. */
static int fsync_dir_of(const char *path) {
  char *copy = strdup(path);
  if (copy == NULL) {
    errno = ENOMEM;
    return -1;
  }
  int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(copy);
  if (fd < 0) {
    return -1;
  }
  int rc = fsync(fd);
  int saved = errno;
  close(fd);
  errno = saved;
  return rc;
}

static int is_regular(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static unsigned id_thread(uint64_t id) {
  return (unsigned)(id >> QX_ID_THREAD_SHIFT) & QX_ID_THREAD_MASK;
}

/* ---- export ---- */

/* What one export has and does. */
struct exporter {
  const struct qx_args *a;
  struct spool_scan scan;
  int lock_fd;
  int out_fd;
  int out_created;                /* out_fd is a file we made */
  const struct spool_entry **sel; /* the messages to export */
  size_t num_sel;
  struct spool_done_key *keys; /* each recipient exported */
  size_t num_keys, cap_keys;
  struct qarc_end totals;
};

/* export_preflight refuses what cannot work before anything is touched. */
static int export_preflight(const struct qx_args *a) {
  struct stat st;
  if (strcmp(a->path, "-") == 0 && isatty(STDOUT_FILENO)) {
    fprintf(stderr, "postseal: not writing an archive to a terminal; use "
                    "--out FILE or redirect stdout\n");
    return CLI_USAGE;
  }
  if (a->remove && strcmp(a->path, "-") == 0 && !is_regular(STDOUT_FILENO)) {
    fprintf(stderr, "postseal: --remove needs an archive that can be made "
                    "durable: --out FILE, or stdout redirected to a file\n");
    return CLI_USAGE;
  }
  if (stat(a->o.spool_dir, &st) != 0) {
    fprintf(stderr, "postseal: spool %s: %s\n", a->o.spool_dir,
            strerror(errno));
    return CLI_FAIL;
  }
  return 0;
}

/* export_lock takes the spool lock: export needs postseald stopped. */
static int export_lock(struct exporter *x) {
  const char *dir = x->a->o.spool_dir;
  char err[CLI_ERR_LEN] = "";
  if (queue_drop_to_spool_owner(dir) != 0) {
    return -1;
  }
  int rc = spool_lock(dir, &x->lock_fd, err, sizeof err);
  if (rc == 1) {
    fprintf(stderr,
            "postseal: postseald is running on %s (the spool is locked): "
            "stop it first (SIGTERM drains it), then export\n",
            dir);
  } else if (rc < 0) {
    fprintf(stderr, "postseal: spool lock: %s\n", err);
  }
  return rc == 0 ? 0 : -1;
}

/* export_select lists the messages to export: every unfinished one, or
 * the ones --ids names (each must be queued and unfinished). */
static int export_select(struct exporter *x) {
  const struct qx_args *a = x->a;
  x->sel = calloc(x->scan.num_entries + 1, sizeof *x->sel);
  if (x->sel == NULL) {
    fprintf(stderr, "postseal: out of memory\n");
    return -1;
  }
  int missing = 0;
  for (size_t k = 0; k < a->num_ids; k++) {
    const struct spool_entry *e = spool_scan_find(&x->scan, a->ids[k]);
    if (e == NULL || e->num_done >= e->num_rcpts) {
      char qid[SPOOL_QUEUE_ID_LEN + 1];
      spool_queue_id_format(a->ids[k], qid);
      fprintf(stderr, "postseal: %s: no such message\n", qid);
      missing = 1;
    }
  }
  for (size_t i = 0; !missing && i < x->scan.num_entries; i++) {
    const struct spool_entry *e = &x->scan.entries[i];
    size_t k = 0;
    while (k < a->num_ids && a->ids[k] != e->queue_id) {
      k++;
    }
    if (e->num_done < e->num_rcpts && (a->num_ids == 0 || k < a->num_ids)) {
      x->sel[x->num_sel++] = e;
    }
  }
  return missing ? -1 : 0;
}

/* export_open creates the archive file (never over an existing one), or
 * takes stdout. */
static int export_open(struct exporter *x) {
  const char *path = x->a->path;
  if (strcmp(path, "-") == 0) {
    x->out_fd = STDOUT_FILENO;
    return 0;
  }
  x->out_fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (x->out_fd < 0) {
    fprintf(stderr, "postseal: %s: %s%s\n", path, strerror(errno),
            errno == EEXIST ? " (not overwriting an archive)" : "");
    return -1;
  }
  x->out_created = 1;
  return 0;
}

/* export_note_rcpt remembers an exported recipient for --remove. */
static int export_note_rcpt(struct exporter *x, uint64_t id, uint32_t index) {
  if (x->num_keys == x->cap_keys) {
    size_t cap = x->cap_keys ? 2 * x->cap_keys : 64;
    struct spool_done_key *k = realloc(x->keys, cap * sizeof *k);
    if (k == NULL) {
      return -1;
    }
    x->keys = k;
    x->cap_keys = cap;
  }
  x->keys[x->num_keys++] = (struct spool_done_key){id, index};
  return 0;
}

/* export_open_rcpts keeps m's recipients without a DONE record in *open
 * (reused between messages) and notes them. */
static int export_open_rcpts(struct exporter *x, const struct spool_entry *e,
                             struct spool_message *m, struct buf *open) {
  size_t n = 0;
  buf_reset(open);
  if (buf_reserve(open, m->num_rcpts * sizeof(struct spool_rcpt)) != 0) {
    return -1;
  }
  struct spool_rcpt *r = (struct spool_rcpt *)open->data;
  for (size_t i = 0; i < m->num_rcpts; i++) {
    if (spool_scan_rcpt_done(&x->scan, e->queue_id, (uint32_t)i)) {
      continue;
    }
    if (export_note_rcpt(x, e->queue_id, (uint32_t)i) != 0) {
      return -1;
    }
    r[n++] = m->rcpts[i];
  }
  m->rcpts = r;
  m->num_rcpts = n;
  return 0;
}

/* export_write_one writes the record of one message: head, body, checksum
 * (the body is not copied). */
static int export_write_one(struct exporter *x, const struct qarc_message *q,
                            struct buf *head) {
  uint8_t trailer[QARC_TRAILER_LEN];
  buf_reset(head);
  if (qarc_message_encode_head(head, q, trailer) != 0) {
    return -1;
  }
  if (fd_write_all(x->out_fd, head->data, head->len) != 0 ||
      fd_write_all(x->out_fd, q->m.body, q->m.body_len) != 0 ||
      fd_write_all(x->out_fd, trailer, sizeof trailer) != 0) {
    return -1;
  }
  x->totals.num_messages++;
  x->totals.num_rcpts += q->m.num_rcpts;
  return 0;
}

/* export_header writes the archive's header line. */
static int export_header(struct exporter *x) {
  if (fd_write_all(x->out_fd, QARC_HEADER, QARC_HEADER_LEN) != 0) {
    fprintf(stderr, "postseal: %s: %s\n",
            x->out_created ? x->a->path : "stdout", strerror(errno));
    return -1;
  }
  return 0;
}

/* export_messages writes every selected message. Returns 0 or -1
 * (printed). */
static int export_messages(struct exporter *x) {
  struct buf storage = {0}, rcpts = {0}, open = {0}, head = {0};
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < x->num_sel; i++) {
    const struct spool_entry *e = x->sel[i];
    struct qarc_message q = {.held = e->held};
    char qid[SPOOL_QUEUE_ID_LEN + 1];
    spool_queue_id_format(e->queue_id, qid);
    if (spool_read_message(x->a->o.spool_dir, e, &storage, &q.m, &rcpts) != 0) {
      fprintf(stderr, "postseal: %s: cannot read seg/%s: %s\n", qid, e->segment,
              strerror(errno ? errno : EPROTO));
      rc = -1;
    } else if (export_open_rcpts(x, e, &q.m, &open) != 0 ||
               export_write_one(x, &q, &head) != 0) {
      fprintf(stderr, "postseal: %s: cannot export: %s\n", qid,
              strerror(errno));
      rc = -1;
    }
  }
  buf_free(&storage);
  buf_free(&rcpts);
  buf_free(&open);
  buf_free(&head);
  return rc;
}

/* export_finish writes the end record and makes the archive durable:
 * fsync of the file and, for a new file, of its directory. A pipe cannot
 * be synced; it passes unless --remove asked (refused up front). */
static int export_finish(struct exporter *x) {
  struct buf b = {0};
  int rc = qarc_end_encode(&b, &x->totals);
  if (rc == 0) {
    rc = fd_write_all(x->out_fd, b.data, b.len);
  }
  buf_free(&b);
  if (rc == 0 && is_regular(x->out_fd)) {
    rc = fsync(x->out_fd);
  }
  if (rc == 0 && x->out_created) {
    rc = fsync_dir_of(x->a->path);
  }
  if (rc == 0 && x->out_created) {
    rc = close(x->out_fd);
    x->out_fd = -1;
  }
  if (rc != 0) {
    fprintf(stderr, "postseal: %s: %s\n",
            x->out_created ? x->a->path : "stdout", strerror(errno));
  }
  return rc;
}

/* export_remove finishes every exported recipient in this spool: a DONE
 * record (outcome deleted) through the writer of its id's thread (a fresh
 * segment, as queue delete does), fdatasync'd. Returns 0 or -1 (printed:
 * the archive is whole; these messages are in both places). */
static int export_remove(struct exporter *x) {
  struct spool_writer *w[SPOOL_MAX_THREADS] = {0};
  int64_t now = cli_now_ms();
  int err = 0;
  for (size_t i = 0; err == 0 && i < x->num_keys; i++) {
    unsigned t = id_thread(x->keys[i].queue_id);
    struct spool_done d = {x->keys[i].queue_id, x->keys[i].rcpt_index,
                           SPOOL_OUTCOME_DELETED, now};
    if (w[t] == NULL) {
      w[t] = spool_writer_open(x->a->o.spool_dir, t, x->scan.max_queue_id + 1);
    }
    if (w[t] == NULL || spool_writer_add_done(w[t], &d, NULL) != 0) {
      err = errno ? errno : EIO;
    }
  }
  for (unsigned t = 0; t < SPOOL_MAX_THREADS; t++) {
    if (w[t] == NULL) {
      continue;
    }
    if (err != 0) { /* write none rather than some */
      spool_writer_fail_staged(w[t], -err, NULL, NULL);
    } else if (spool_writer_sync_flush(w[t], NULL, NULL) != 0) {
      err = errno ? errno : EIO;
    }
    spool_writer_close(w[t]);
  }
  if (err != 0) {
    fprintf(stderr,
            "postseal: the archive is complete, but --remove failed: %s; "
            "the exported messages are still queued here too\n",
            strerror(err));
    return -1;
  }
  return 0;
}

/* export_report prints the summary: on stdout, or on stderr when the
 * archive went to stdout. */
static void export_report(const struct exporter *x) {
  int to_stdout = strcmp(x->a->path, "-") != 0;
  FILE *f = to_stdout ? stdout : stderr;
  fprintf(f,
          "postseal: exported %" PRIu64 " message%s (%" PRIu64
          " recipient%s) to %s%s\n",
          x->totals.num_messages, x->totals.num_messages == 1 ? "" : "s",
          x->totals.num_rcpts, x->totals.num_rcpts == 1 ? "" : "s",
          to_stdout ? x->a->path : "stdout",
          x->a->remove ? "; removed from this spool" : "");
}

/* export_run does the whole export. Returns 0 or -1 (printed). */
static int export_run(struct exporter *x) {
  if (export_lock(x) != 0 || queue_scan(x->a->o.spool_dir, &x->scan) != 0) {
    return -1;
  }
  if (export_select(x) != 0 || export_open(x) != 0) {
    return -1;
  }
  if (export_header(x) != 0 || export_messages(x) != 0 ||
      export_finish(x) != 0) {
    if (x->out_created) {
      unlink(x->a->path); /* not an archive anyone should trust */
    }
    return -1;
  }
  if (x->a->remove && export_remove(x) != 0) {
    return -1;
  }
  export_report(x);
  return 0;
}

int cmd_queue_export(int argc, char **argv) {
  struct qx_args a;
  int rc = qx_args_parse(&a, 1, argc, argv);
  if (rc == 0) {
    rc = export_preflight(&a);
  }
  if (rc == 0) {
    struct exporter x = {.a = &a, .lock_fd = -1, .out_fd = -1};
    signal(SIGPIPE, SIG_IGN); /* a closed pipe is an error, not a kill */
    rc = export_run(&x) == 0 ? CLI_OK : CLI_FAIL;
    if (x.out_created && x.out_fd >= 0) {
      close(x.out_fd);
    }
    if (x.lock_fd >= 0) {
      close(x.lock_fd);
    }
    free(x.sel);
    free(x.keys);
    spool_scan_free(&x.scan);
  }
  qx_args_free(&a);
  return fflush(stdout) != 0 ? CLI_FAIL : rc;
}

/* ---- import: reading the archive ---- */

/* An archive being read from fd, from its first octet. */
struct qx_in {
  int fd;
  off_t start;    /* where the archive begins in fd (read twice) */
  struct buf buf; /* read, not yet consumed from off */
  size_t off;
  int eof;
  int header_seen; /* the header was consumed with the first record */
  struct qarc_reader rd;
  struct buf rcpts;
  const char *why; /* after QARC_BAD */
};

/* qx_in_fill reads until buf holds `need` octets from off, or EOF. Each
 * turn reads at most QX_READ_CHUNK: memory follows the data, not a length
 * field that may be corrupted. */
static int qx_in_fill(struct qx_in *in, size_t need) {
  buf_consume(&in->buf, in->off);
  in->off = 0;
  while (in->buf.len < need && !in->eof) {
    if (buf_reserve(&in->buf, QX_READ_CHUNK) != 0) {
      errno = ENOMEM;
      return -1;
    }
    ssize_t n = read(in->fd, in->buf.data + in->buf.len, QX_READ_CHUNK);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return -1;
    }
    in->eof = n == 0;
    in->buf.len += (size_t)n;
  }
  return 0;
}

/* qx_in_rewind goes back to the archive's first octet. */
static int qx_in_rewind(struct qx_in *in) {
  buf_reset(&in->buf);
  in->off = 0;
  in->eof = 0;
  in->header_seen = 0;
  in->why = NULL;
  qarc_reader_init(&in->rd);
  return lseek(in->fd, in->start, SEEK_SET) == in->start ? 0 : -1;
}

/* qx_next reads the next item: QARC_MESSAGE (m and *out_rec, the record's
 * octets, valid until the next call), QARC_END, or QARC_BAD (in->why;
 * a read error too). */
static enum qarc_result qx_next(struct qx_in *in, struct qarc_message *m,
                                const uint8_t **out_rec, size_t *out_rec_len) {
  for (;;) {
    size_t len = in->buf.len - in->off, consumed = 0, need = 1;
    const uint8_t *p = in->buf.data ? in->buf.data + in->off : NULL;
    enum qarc_result r = len == 0 ? QARC_NEED_MORE
                                  : qarc_reader_next(&in->rd, p, len, &consumed,
                                                     &need, m, &in->rcpts);
    if (r == QARC_MESSAGE || r == QARC_END) {
      size_t skip = in->header_seen ? 0 : QARC_HEADER_LEN;
      in->header_seen = 1;
      *out_rec = p + skip;
      *out_rec_len = consumed - skip;
      in->off += consumed;
      return r;
    }
    if (r == QARC_BAD) {
      in->why = in->rd.why;
      return r;
    }
    if (in->eof) {
      in->why = len == 0 && in->header_seen
                    ? "the archive ends here: truncated (no end record)"
                    : "truncated: the archive ends inside this record";
      return QARC_BAD;
    }
    if (qx_in_fill(in, len < need ? need : len + 1) != 0) {
      in->why = strerror(errno);
      return QARC_BAD;
    }
  }
}

/* qx_spill copies fd (a pipe) into an unlinked temporary file, so the
 * archive can be checked whole before anything is imported. Returns the
 * file's descriptor at offset 0, or -1 (printed). */
static int qx_spill(int fd) {
  const char *tmp = getenv("TMPDIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/postseal-import.XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  int out = mkostemp(path, O_CLOEXEC);
  if (out < 0) {
    fprintf(stderr, "postseal: temporary file %s: %s\n", path, strerror(errno));
    return -1;
  }
  unlink(path);
  uint8_t chunk[QX_COPY_CHUNK];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0 || fd_write_all(out, chunk, (size_t)n) != 0) {
      if (n == 0 && lseek(out, 0, SEEK_SET) == 0) {
        return out;
      }
      fprintf(stderr, "postseal: copying the archive: %s\n",
              strerror(n == 0 ? EIO : errno));
      close(out);
      return -1;
    }
  }
}

/* qx_in_open opens the archive (stdin for "-") so it can be read twice. */
static int qx_in_open(struct qx_in *in, const char *path) {
  int fd = STDIN_FILENO;
  if (strcmp(path, "-") == 0 && isatty(fd)) {
    fprintf(stderr, "postseal: not reading an archive from a terminal; use "
                    "--in FILE or redirect stdin\n");
    return -1;
  }
  if (strcmp(path, "-") != 0 && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
    fprintf(stderr, "postseal: %s: %s\n", path, strerror(errno));
    return -1;
  }
  in->start = lseek(fd, 0, SEEK_CUR);
  if (in->start < 0) {
    int spilled = qx_spill(fd);
    if (fd != STDIN_FILENO) {
      close(fd);
    }
    fd = spilled;
    in->start = 0;
  }
  in->fd = fd;
  qarc_reader_init(&in->rd);
  return fd < 0 ? -1 : 0;
}

/* qx_in_verify reads the whole archive once: every checksum, every
 * record, the end record's counts. Returns 0 or -1 (printed). */
static int qx_in_verify(struct qx_in *in, const char *name) {
  for (;;) {
    struct qarc_message m;
    const uint8_t *rec;
    size_t rec_len;
    enum qarc_result r = qx_next(in, &m, &rec, &rec_len);
    if (r == QARC_END) {
      return 0;
    }
    if (r == QARC_BAD) {
      fprintf(stderr,
              "postseal: archive %s: message %" PRIu64
              ": %s; nothing imported\n",
              name, in->rd.num_messages + 1, in->why);
      return -1;
    }
  }
}

/* ---- import: batches to postseald or into the spool ---- */

enum qx_mode { QX_UNDECIDED, QX_ONLINE, QX_OFFLINE };

/* Messages read from the archive, not yet queued. */
struct qx_batch {
  struct buf recs; /* their MESSAGE records, as in the archive */
  uint64_t src[QX_BATCH_MESSAGES];    /* their ids at the source */
  uint64_t new_id[QX_BATCH_MESSAGES]; /* offline: the ids given here */
  uint8_t held[QX_BATCH_MESSAGES];    /* offline: held at the source */
  int ok[QX_BATCH_MESSAGES];          /* offline: MESSAGE record durable */
  int hold_ok[QX_BATCH_MESSAGES];     /* offline: HOLD record durable */
  size_t num;
  uint64_t num_rcpts;
};

struct importer {
  const struct qx_args *a;
  enum qx_mode mode;
  struct qx_batch b;
  uint64_t done_messages, done_rcpts; /* queued so far */
  /* offline */
  int lock_fd;
  struct spool_writer *w;
};

/* import_item reports one message queued under new_id. */
static void import_item(struct importer *im, size_t i, uint64_t new_id) {
  char src[SPOOL_QUEUE_ID_LEN + 1], dst[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(im->b.src[i], src);
  spool_queue_id_format(new_id, dst);
  printf("postseal: %s imported as %s\n", src, dst);
  im->done_messages++;
}

/* online_reply handles one reply line of an IMPORT. Returns 1 for more,
 * 0 after OK, -1 after ERR or a protocol error (printed). */
static int online_reply(struct importer *im, const struct ctl_reply *r,
                        size_t *num_items) {
  if (r->kind == CTL_REPLY_ITEM && *num_items < im->b.num &&
      r->word == CTL_WORD_QUEUED) {
    import_item(im, (*num_items)++, r->queue_id);
    return 1;
  }
  if (r->kind == CTL_REPLY_ERR) {
    fprintf(stderr, "postseal: postseald: %s\n", r->text);
    return -1;
  }
  if (r->kind == CTL_REPLY_OK && r->count == *num_items &&
      *num_items == im->b.num) {
    im->done_rcpts += im->b.num_rcpts;
    return 0;
  }
  fprintf(stderr,
          "postseal: postseald's answer to IMPORT is not as "
          "expected (item %zu of %zu)\n",
          *num_items + 1, im->b.num);
  return -1;
}

/* online_replies reads the answer to an IMPORT. Returns 0 or -1. */
static int online_replies(struct importer *im, int fd) {
  struct buf in = {0};
  size_t num_items = 0;
  int rc = 1;
  while (rc > 0) {
    size_t len, consumed;
    struct ctl_reply r;
    const char *why = "reply line too long";
    enum ctl_line_result lr =
        ctl_line_next(&len, &consumed, (const char *)in.data, in.len);
    if (lr == CTL_LINE_NEED_MORE) {
      int got = queue_recv_more(fd, &in);
      if (got <= 0) {
        fprintf(stderr, "postseal: control socket %s: %s\n",
                im->a->o.socket_path,
                got == 0 ? "closed before the final reply" : strerror(errno));
        rc = -1;
      }
      continue;
    }
    if (lr == CTL_LINE_TOO_LONG ||
        ctl_reply_parse(&r, &why, (const char *)in.data, len) != 0) {
      fprintf(stderr, "postseal: control socket %s: %s\n", im->a->o.socket_path,
              why);
      rc = -1;
      continue;
    }
    buf_consume(&in, consumed);
    rc = online_reply(im, &r, &num_items);
  }
  buf_free(&in);
  return rc;
}

/* online_flush sends the batch as one IMPORT. Returns 0, 1 if nothing
 * listens on the control socket (nothing sent), or -1 (printed). */
static int online_flush(struct importer *im) {
  const char *path = im->a->o.socket_path;
  if (path == NULL) {
    return 1;
  }
  int fd = queue_ctl_connect(path);
  if (fd < 0 && im->mode == QX_UNDECIDED &&
      (errno == ENOENT || errno == ECONNREFUSED)) {
    return 1;
  }
  if (fd < 0) {
    fprintf(stderr, "postseal: control socket %s: %s\n", path, strerror(errno));
    return -1;
  }
  im->mode = QX_ONLINE;
  struct buf line = {0};
  int rc = ctl_import_format(&line, im->b.recs.len);
  if (rc == 0 && (queue_send_all(fd, line.data, line.len) != 0 ||
                  queue_send_all(fd, im->b.recs.data, im->b.recs.len) != 0)) {
    fprintf(stderr, "postseal: control socket %s: send: %s\n", path,
            strerror(errno));
    rc = -1;
  }
  buf_free(&line);
  if (rc == 0) {
    rc = online_replies(im, fd);
  }
  close(fd);
  return rc;
}

/* offline_begin takes the spool for writing: lock, the largest queue id
 * there, a writer (thread 0's next segment). Returns 0 or -1 (printed). */
static int offline_begin(struct importer *im) {
  const struct queue_opts *o = &im->a->o;
  char err[CLI_ERR_LEN] = "";
  struct spool_scan scan;
  struct stat st;
  if (stat(o->spool_dir, &st) == 0 &&
      queue_drop_to_spool_owner(o->spool_dir) != 0) {
    return -1;
  }
  int rc = spool_lock(o->spool_dir, &im->lock_fd, err, sizeof err);
  if (rc == 1) {
    fprintf(stderr,
            "postseal: postseald seems to run (%s is locked) but does not "
            "answer on %s\n",
            o->spool_dir, o->socket_path ? o->socket_path : "(none)");
  } else if (rc < 0) {
    fprintf(stderr, "postseal: spool lock: %s\n", err);
  }
  if (rc != 0 || queue_scan(o->spool_dir, &scan) != 0) {
    return -1;
  }
  im->w = spool_writer_open(o->spool_dir, 0, scan.max_queue_id + 1);
  spool_scan_free(&scan);
  if (im->w == NULL) {
    fprintf(stderr, "postseal: spool %s: %s\n", o->spool_dir, strerror(errno));
    return -1;
  }
  im->mode = QX_OFFLINE;
  return 0;
}

/* offline_stage_one stages batch message i (decoded as q) under a new id,
 * with a HOLD record if it was held at the source. The records' cookies
 * are the message's ok flags, set once each record is durable. */
static int offline_stage_one(struct importer *im, size_t i,
                             const struct qarc_message *q, int64_t now) {
  struct spool_message sm = q->m;
  sm.queue_id = spool_writer_new_id(im->w, now);
  im->b.new_id[i] = sm.queue_id;
  im->b.held[i] = q->held;
  if (spool_writer_add(im->w, &sm, &im->b.ok[i]) != 0) {
    return -1;
  }
  struct spool_hold h = {sm.queue_id, 1, 1, now};
  return q->held ? spool_writer_add_hold(im->w, &h, &im->b.hold_ok[i]) : 0;
}

/* offline_done: a record is durable (err 0) or not. */
static void offline_done(void *cookie, int err, void *arg) {
  *(int *)cookie = err == 0;
}

/* offline_stage_all stages the batch's messages. Returns 0 or -1. */
static int offline_stage_all(struct importer *im, int64_t now) {
  struct buf rcpts = {0};
  size_t off = 0;
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < im->b.num; i++) {
    struct qarc_message q;
    struct qarc_end e;
    size_t consumed = 0, need = 0;
    const char *why;
    rc = qarc_record_decode(im->b.recs.data + off, im->b.recs.len - off,
                            &consumed, &need, &q, &e, &rcpts,
                            &why) == QARC_MESSAGE
             ? offline_stage_one(im, i, &q, now)
             : -1;
    off += consumed;
  }
  buf_free(&rcpts);
  return rc;
}

/* offline_flush writes the batch into the spool and fdatasyncs it; a
 * batch that does not stage whole writes nothing. */
static int offline_flush(struct importer *im) {
  memset(im->b.ok, 0, sizeof im->b.ok);
  memset(im->b.hold_ok, 0, sizeof im->b.hold_ok);
  int rc = offline_stage_all(im, cli_now_ms());
  int err = errno ? errno : EIO;
  if (rc == 0 && spool_writer_sync_flush(im->w, offline_done, NULL) != 0) {
    err = errno ? errno : EIO;
    rc = -1;
  }
  if (rc != 0) { /* what is still staged is not written */
    spool_writer_fail_staged(im->w, -err, offline_done, NULL);
  }
  for (size_t k = 0; k < im->b.num; k++) {
    if (im->b.ok[k]) {
      import_item(im, k, im->b.new_id[k]);
    }
    if (im->b.ok[k] && im->b.held[k] && !im->b.hold_ok[k]) {
      fprintf(stderr, "postseal: the message above is queued but NOT held "
                      "as it was at the source\n");
      rc = -1;
    }
  }
  if (rc != 0) {
    fprintf(stderr, "postseal: spool %s: write failed: %s\n",
            im->a->o.spool_dir, strerror(err));
    return -1;
  }
  im->done_rcpts += im->b.num_rcpts;
  return 0;
}

/* import_flush queues the batch: through postseald if it answers (the
 * first batch decides), else into the spool. Returns 0 or -1 (printed). */
static int import_flush(struct importer *im) {
  int rc = 0;
  if (im->b.num == 0) {
    return 0;
  }
  if (im->mode != QX_OFFLINE) {
    rc = online_flush(im); /* 1 only while undecided */
  }
  if (rc == 1) {
    rc = offline_begin(im);
  }
  if (rc == 0 && im->mode == QX_OFFLINE) {
    rc = offline_flush(im);
  }
  buf_reset(&im->b.recs);
  im->b.num = 0;
  im->b.num_rcpts = 0;
  return rc == 0 ? 0 : -1;
}

/* import_add adds a checked record to the batch, sending the batch first
 * when the record would take it past its size. */
static int import_add(struct importer *im, const struct qarc_message *m,
                      const uint8_t *rec, size_t rec_len) {
  if (im->b.num > 0 && im->b.recs.len + rec_len > QX_BATCH_BYTES &&
      import_flush(im) != 0) {
    return -1;
  }
  if (buf_append(&im->b.recs, rec, rec_len) != 0) {
    fprintf(stderr, "postseal: out of memory\n");
    return -1;
  }
  im->b.src[im->b.num++] = m->m.queue_id;
  im->b.num_rcpts += m->m.num_rcpts;
  return im->b.num == QX_BATCH_MESSAGES ? import_flush(im) : 0;
}

/* import_all reads the checked archive again and queues its messages. */
static int import_all(struct importer *im, struct qx_in *in) {
  for (;;) {
    struct qarc_message m;
    const uint8_t *rec;
    size_t rec_len;
    enum qarc_result r = qx_next(in, &m, &rec, &rec_len);
    if (r == QARC_END) {
      return import_flush(im);
    }
    if (r != QARC_MESSAGE) { /* changed since it was checked? */
      fprintf(stderr, "postseal: archive: message %" PRIu64 ": %s\n",
              in->rd.num_messages + 1, in->why);
      import_flush(im); /* what was read before is checked and whole */
      return -1;
    }
    if (import_add(im, &m, rec, rec_len) != 0) {
      return -1;
    }
  }
}

static void import_report(const struct importer *im, int rc) {
  printf("postseal: imported %" PRIu64 " message%s (%" PRIu64
         " recipient%s)%s%s\n",
         im->done_messages, im->done_messages == 1 ? "" : "s", im->done_rcpts,
         im->done_rcpts == 1 ? "" : "s",
         im->mode == QX_OFFLINE ? " into the spool; postseald delivers them "
                                  "when it starts"
                                : "",
         rc != 0 ? "; the import stopped early: see above" : "");
}

int cmd_queue_import(int argc, char **argv) {
  struct qx_args a;
  struct qx_in in = {.fd = -1};
  int rc = qx_args_parse(&a, 0, argc, argv);
  if (rc == 0) {
    const char *name = strcmp(a.path, "-") == 0 ? "stdin" : a.path;
    rc = qx_in_open(&in, a.path) != 0 || qx_in_verify(&in, name) != 0 ? CLI_FAIL
                                                                      : 0;
  }
  if (rc == 0) {
    struct importer *im = calloc(1, sizeof *im);
    if (im == NULL || qx_in_rewind(&in) != 0) {
      fprintf(stderr, "postseal: %s\n", strerror(im ? errno : ENOMEM));
      rc = CLI_FAIL;
    } else {
      *im = (struct importer){.a = &a, .lock_fd = -1};
      rc = import_all(im, &in) == 0 ? CLI_OK : CLI_FAIL;
      import_report(im, rc);
      spool_writer_close(im->w);
      if (im->lock_fd >= 0) {
        close(im->lock_fd);
      }
      buf_free(&im->b.recs);
    }
    free(im);
  }
  if (in.fd > STDIN_FILENO) {
    close(in.fd);
  }
  buf_free(&in.buf);
  buf_free(&in.rcpts);
  qx_args_free(&a);
  return fflush(stdout) != 0 ? CLI_FAIL : rc;
}
