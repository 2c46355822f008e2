/* core/cli/queue_ops.c — `postseal queue delete|hold|release|flush`.
 *
 * Two paths. Online: postseald answers on its control socket, gets the
 * request (proto/ctl.h) in lines of at most CTL_MAX_LINE_IDS ids, one
 * connection each, and applies it to its queue and its spool; its reply
 * lines are printed. Offline: nothing listens there (connect says ENOENT or
 * ECONNREFUSED), so postseald is stopped: the CLI takes the spool lock
 * (spool_lock; busy means a daemon runs but does not answer: an error),
 * scans read-only, and appends DONE (outcome DELETED) or HOLD/RELEASE
 * records through spool writers. flush has no offline path: nothing
 * delivers while the daemon is stopped.
 *
 * Offline writers: one per thread index named in the queue ids touched
 * (bits 16..21). spool_writer_open never appends to an existing segment: it
 * creates the next sequence number of that thread and fsyncs it, so a torn
 * tail left by a crashed daemon is never built upon (the daemon's repair
 * cuts it at its next start). Each writer's records are written and
 * fdatasync'd before anything is reported done. Which thread's segment a
 * HOLD/RELEASE lands in does not decide its order (generations, see
 * core/spool.h); the id's thread just keeps a message's records together.
 *
 * Run as root, the offline path first becomes the owner of the spool
 * directory: a root-owned 0600 segment or lock file would stop postseald
 * (running as that owner) from starting. */
#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/cli/cli.h"
#include "core/spool.h"
#include "proto/ctl.h"

#define OPS_TIMEOUT_SECS CLI_CTL_TIMEOUT_SECS
#define OPS_ID_THREAD_SHIFT 16
#define OPS_ID_THREAD_MASK 0x3fu

enum queue_op { OP_DELETE, OP_HOLD, OP_RELEASE, OP_FLUSH };

struct op_desc {
  const char *name;   /* the command */
  enum ctl_verb verb; /* its request */
  const char *done;   /* the summary line's participle */
  enum ctl_word word; /* the reply word that means it was done */
};

static const struct op_desc ops[] = {
    [OP_DELETE] = {"delete", CTL_VERB_DELETE, "deleted", CTL_WORD_DELETED},
    [OP_HOLD] = {"hold", CTL_VERB_HOLD, "held", CTL_WORD_HELD},
    [OP_RELEASE] = {"release", CTL_VERB_RELEASE, "released", CTL_WORD_RELEASED},
    [OP_FLUSH] = {"flush", CTL_VERB_FLUSH, "queued for delivery",
                  CTL_WORD_QUEUED},
};

/* What one command did, for its summary and exit status. */
struct op_tally {
  size_t done;   /* messages the operation was applied to */
  size_t failed; /* messages it was not (unknown, busy, write failed) */
};

/* One command's arguments, checked. */
struct op_args {
  enum queue_op op;
  struct queue_opts o;
  uint64_t *ids; /* distinct, in the order given */
  size_t num_ids;
};

/* ---- arguments ---- */

/* op_args_ids parses the positional queue ids, dropping repeats. */
static int op_args_ids(struct op_args *a) {
  a->ids = calloc((size_t)a->o.num_args + 1, sizeof *a->ids);
  if (a->ids == NULL) {
    fprintf(stderr, "postseal: out of memory\n");
    return CLI_FAIL;
  }
  for (int i = 0; i < a->o.num_args; i++) {
    uint64_t id;
    if (!spool_queue_id_parse(a->o.args[i], &id)) {
      fprintf(stderr, "postseal: '%s' is not a queue id (16 hex digits)\n",
              a->o.args[i]);
      return CLI_USAGE;
    }
    size_t k = 0;
    while (k < a->num_ids && a->ids[k] != id) {
      k++;
    }
    if (k == a->num_ids) {
      a->ids[a->num_ids++] = id;
    }
  }
  return 0;
}

/* op_args_check applies the rules between arguments: ids or --all (not
 * both) for delete/hold/release, ids or --domain (or neither) for flush,
 * and a domain the protocol accepts. */
static int op_args_check(struct op_args *a) {
  if (a->op != OP_FLUSH && (a->o.all == (a->num_ids > 0))) {
    fprintf(stderr, "postseal: queue %s: %s\n", ops[a->op].name,
            a->o.all ? "--all excludes queue ids"
                     : "queue ids or --all needed");
    return CLI_USAGE;
  }
  if (a->o.domain != NULL && a->num_ids > 0) {
    fprintf(stderr, "postseal: queue flush: --domain excludes queue ids\n");
    return CLI_USAGE;
  }
  if (a->o.domain != NULL) {
    struct ctl_request req = {.verb = CTL_VERB_FLUSH};
    struct buf scratch = {0};
    size_t n = strlen(a->o.domain);
    int ok = n > 0 && n <= CTL_MAX_DOMAIN;
    if (ok) {
      memcpy(req.domain, a->o.domain, n + 1);
      ok = ctl_request_format(&scratch, &req) == 0;
    }
    buf_free(&scratch);
    if (!ok) {
      fprintf(stderr, "postseal: '%s' is not a domain\n", a->o.domain);
      return CLI_USAGE;
    }
  }
  return 0;
}

static int op_args_parse(struct op_args *a, enum queue_op op, int argc,
                         char **argv) {
  unsigned flags = QOPT_SOCKET | (op == OP_FLUSH ? QOPT_DOMAIN : QOPT_ALL);
  *a = (struct op_args){.op = op};
  int rc = queue_opts_parse(argc, argv, flags, 0, -1, &a->o);
  if (rc == 0) {
    rc = op_args_ids(a);
  }
  if (rc == 0) {
    rc = op_args_check(a);
  }
  if (rc == CLI_USAGE) {
    queue_usage(stderr);
  }
  return rc;
}

static void op_args_free(struct op_args *a) {
  free(a->ids);
  queue_opts_free(&a->o);
}

/* ---- reporting ---- */

/* word_text says what a reply word means for one message. */
static const char *word_text(enum queue_op op, const struct ctl_reply *r) {
  switch (r->word) {
  case CTL_WORD_QUEUED:
    return "queued for delivery";
  case CTL_WORD_ACTIVE:
    return "being delivered";
  case CTL_WORD_DEFERRED:
    return "deferred";
  case CTL_WORD_HELD:
    return op == OP_FLUSH ? "held, not flushed" : "held";
  case CTL_WORD_RELEASED:
    return "released";
  case CTL_WORD_NOT_HELD:
    return "not held";
  case CTL_WORD_DELETED:
    return "deleted";
  case CTL_WORD_BUSY:
    return "busy, try again";
  case CTL_WORD_NOT_FOUND:
    return "no such message";
  case CTL_WORD_UNKNOWN:
    break;
  }
  return r->word_text;
}

/* report prints one message's result: on stdout, or on stderr and counted
 * as failed. */
static void report(struct op_tally *t, int failed, uint64_t id,
                   const char *what) {
  char qid[SPOOL_QUEUE_ID_LEN + 1];
  spool_queue_id_format(id, qid);
  fprintf(failed ? stderr : stdout, "postseal: %s: %s\n", qid, what);
  t->failed += failed != 0;
}

/* report_summary prints the count line of a command without ids. */
static void report_summary(const struct op_args *a, const struct op_tally *t) {
  if (a->num_ids > 0) {
    return;
  }
  printf("postseal: %zu message%s %s\n", t->done, t->done == 1 ? "" : "s",
         ops[a->op].done);
}

/* ---- online: the control socket ---- */

/* queue_ctl_connect returns a connected socket with send and receive timeouts,
 * or -1 with errno (ENOENT, ECONNREFUSED: nothing listens). */
int queue_ctl_connect(const char *path) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -1;
  }
  struct timeval tv = {.tv_sec = OPS_TIMEOUT_SECS};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0 ||
      connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

int queue_send_all(int fd, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return -1;
    }
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* queue_recv_more appends what the socket has to in. Returns 1, 0 at EOF, -1 on
 * an error (EAGAIN: the timeout passed). */
int queue_recv_more(int fd, struct buf *in) {
  if (buf_reserve(in, CTL_MAX_LINE) != 0) {
    errno = ENOMEM;
    return -1;
  }
  for (;;) {
    ssize_t n = recv(fd, in->data + in->len, in->cap - in->len, 0);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n > 0) {
      in->len += (size_t)n;
    }
    return n > 0 ? 1 : (int)n;
  }
}

/* ctl_reply_take handles one reply line. Returns 1 for more lines, 0 after
 * the final line, -1 on a protocol error (printed). */
static int ctl_reply_take(const struct op_args *a, const struct ctl_reply *r,
                          uint64_t *num_items, struct op_tally *t) {
  if (r->kind == CTL_REPLY_ITEM) {
    (*num_items)++;
    t->done += r->word == ops[a->op].word;
    report(t, ctl_word_failed(r->word), r->queue_id, word_text(a->op, r));
    return 1;
  }
  if (r->kind == CTL_REPLY_ERR) {
    fprintf(stderr, "postseal: postseald: %s\n", r->text);
    t->failed++;
    return 0;
  }
  if (r->count != *num_items) {
    fprintf(stderr,
            "postseal: postseald said OK %" PRIu64 " after %" PRIu64 " lines\n",
            r->count, *num_items);
    return -1;
  }
  return 0;
}

/* recv_failed says why no more reply came (got: queue_recv_more's result). */
static void recv_failed(const struct op_args *a, int got) {
  if (got == 0) {
    fprintf(stderr,
            "postseal: control socket %s: closed before the final "
            "reply\n",
            a->o.socket_path);
  } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
    fprintf(stderr, "postseal: control socket %s: no answer within %d s\n",
            a->o.socket_path, OPS_TIMEOUT_SECS);
  } else {
    fprintf(stderr, "postseal: control socket %s: %s\n", a->o.socket_path,
            strerror(errno));
  }
}

/* ctl_read_replies reads reply lines up to the final one. Returns 0 or -1
 * (printed). */
static int ctl_read_replies(const struct op_args *a, int fd,
                            struct op_tally *t) {
  struct buf in = {0};
  uint64_t num_items = 0;
  int rc = 1;
  while (rc > 0) {
    size_t len, consumed;
    enum ctl_line_result lr =
        ctl_line_next(&len, &consumed, (const char *)in.data, in.len);
    if (lr == CTL_LINE_NEED_MORE) {
      int got = queue_recv_more(fd, &in);
      if (got <= 0) {
        recv_failed(a, got);
        rc = -1;
      }
      continue;
    }
    struct ctl_reply r;
    const char *why = "reply line too long";
    if (lr == CTL_LINE_TOO_LONG ||
        ctl_reply_parse(&r, &why, (const char *)in.data, len) != 0) {
      fprintf(stderr, "postseal: control socket %s: %s\n", a->o.socket_path,
              why);
      rc = -1;
      continue;
    }
    buf_consume(&in, consumed);
    rc = ctl_reply_take(a, &r, &num_items, t);
  }
  buf_free(&in);
  return rc;
}

/* ctl_exchange sends one request on a connected socket and reads its
 * replies. Returns 0 or -1 (printed). */
static int ctl_exchange(const struct op_args *a, int fd,
                        const struct ctl_request *req, struct op_tally *t) {
  struct buf out = {0};
  int rc = ctl_request_format(&out, req);
  if (rc != 0) {
    fprintf(stderr, "postseal: cannot build the request: %s\n",
            strerror(errno));
  } else if ((rc = queue_send_all(fd, out.data, out.len)) != 0) {
    fprintf(stderr, "postseal: control socket %s: send: %s\n", a->o.socket_path,
            strerror(errno));
  } else {
    rc = ctl_read_replies(a, fd, t);
  }
  buf_free(&out);
  return rc;
}

/* online_run sends the operation to postseald. Returns 1 if nothing
 * listens on the control socket (nothing sent), 0 when every request was
 * answered, -1 on an error (printed). */
static int online_run(const struct op_args *a, struct op_tally *t) {
  if (a->o.socket_path == NULL) {
    return 1;
  }
  size_t off = 0;
  do {
    size_t n = a->num_ids - off;
    n = n > CTL_MAX_LINE_IDS ? CTL_MAX_LINE_IDS : n;
    struct ctl_request req = {.verb = ops[a->op].verb, .all = a->o.all};
    if (a->o.domain != NULL) {
      snprintf(req.domain, sizeof req.domain, "%s", a->o.domain);
    }
    memcpy(req.ids, a->ids + off, n * sizeof *req.ids);
    req.num_ids = n;
    int fd = queue_ctl_connect(a->o.socket_path);
    if (fd < 0 && off == 0 && (errno == ENOENT || errno == ECONNREFUSED)) {
      return 1;
    }
    if (fd < 0) {
      fprintf(stderr, "postseal: control socket %s: %s\n", a->o.socket_path,
              strerror(errno));
      return -1;
    }
    int rc = ctl_exchange(a, fd, &req, t);
    close(fd);
    if (rc != 0) {
      return -1;
    }
    off += n;
  } while (off < a->num_ids);
  return 0;
}

/* ---- offline: the spool directly ---- */

/* A message the offline path acts on. */
struct op_target {
  uint64_t id;
  const struct spool_entry *entry; /* NULL: not queued (or finished) */
  const char *noop;                /* nothing to do, and why */
  int staged;                      /* records staged on writers[thread] */
  int err;                         /* errno of a failure, or 0 */
  size_t num_records;
};

struct offline {
  const struct op_args *a;
  struct spool_scan scan;
  int lock_fd;
  int64_t now_ms;
  struct op_target *targets;
  size_t num_targets;
  struct spool_writer *writers[SPOOL_MAX_THREADS];
  int writer_err[SPOOL_MAX_THREADS]; /* errno of a failed open or flush */
};

static unsigned id_thread(uint64_t id) {
  return (unsigned)(id >> OPS_ID_THREAD_SHIFT) & OPS_ID_THREAD_MASK;
}

static int entry_pending(const struct spool_entry *e) {
  return e != NULL && e->num_done < e->num_rcpts;
}

/* queue_drop_to_spool_owner: as root, become the owner of the spool directory
 * (see the top of the file). */
int queue_drop_to_spool_owner(const char *dir) {
  struct stat st;
  if (geteuid() != 0 || stat(dir, &st) != 0 || st.st_uid == 0) {
    return 0;
  }
  if (setgroups(0, NULL) != 0 || setgid(st.st_gid) != 0 ||
      setuid(st.st_uid) != 0) {
    fprintf(stderr, "postseal: cannot switch to the owner of %s: %s\n", dir,
            strerror(errno));
    return -1;
  }
  return 0;
}

/* offline_lock takes the spool lock. Returns 0, or -1 (printed). */
static int offline_lock(struct offline *w) {
  const struct queue_opts *o = &w->a->o;
  char err[CLI_ERR_LEN] = "";
  if (queue_drop_to_spool_owner(o->spool_dir) != 0) {
    return -1;
  }
  int rc = spool_lock(o->spool_dir, &w->lock_fd, err, sizeof err);
  if (rc == 1 && o->socket_path != NULL) {
    fprintf(stderr,
            "postseal: postseald seems to run (%s is locked) but does not "
            "answer on %s\n",
            o->spool_dir, o->socket_path);
  } else if (rc == 1) {
    fprintf(stderr,
            "postseal: postseald seems to run (%s is locked) and has no "
            "control socket (control_socket is \"\")\n",
            o->spool_dir);
  } else if (rc < 0) {
    fprintf(stderr, "postseal: spool lock: %s\n", err);
  }
  return rc == 0 ? 0 : -1;
}

/* offline_targets lists the messages to act on: the ids given, or with
 * --all every pending message the operation changes. */
static int offline_targets(struct offline *w) {
  const struct op_args *a = w->a;
  size_t cap = a->o.all ? w->scan.num_entries : a->num_ids;
  w->targets = calloc(cap + 1, sizeof *w->targets);
  if (w->targets == NULL) {
    fprintf(stderr, "postseal: out of memory\n");
    return -1;
  }
  for (size_t i = 0; i < a->num_ids; i++) {
    const struct spool_entry *e = spool_scan_find(&w->scan, a->ids[i]);
    w->targets[w->num_targets++] = (struct op_target){
        .id = a->ids[i], .entry = entry_pending(e) ? e : NULL};
  }
  for (size_t i = 0; a->o.all && i < w->scan.num_entries; i++) {
    const struct spool_entry *e = &w->scan.entries[i];
    int dup = i > 0 && w->scan.entries[i - 1].queue_id == e->queue_id;
    int wanted = a->op == OP_DELETE || (a->op == OP_HOLD && !e->held) ||
                 (a->op == OP_RELEASE && e->held);
    if (!dup && entry_pending(e) && wanted) {
      w->targets[w->num_targets++] =
          (struct op_target){.id = e->queue_id, .entry = e};
    }
  }
  return 0;
}

/* offline_writer returns the writer of id's thread, opening it (a fresh
 * segment) on first use; NULL with errno if that failed. */
static struct spool_writer *offline_writer(struct offline *w, uint64_t id) {
  unsigned t = id_thread(id);
  if (w->writers[t] == NULL && w->writer_err[t] == 0) {
    w->writers[t] =
        spool_writer_open(w->a->o.spool_dir, t, w->scan.max_queue_id + 1);
    w->writer_err[t] = w->writers[t] ? 0 : errno;
  }
  errno = w->writer_err[t];
  return w->writers[t];
}

/* stage_delete stages a DONE (DELETED) for every pending recipient. */
static int stage_delete(struct offline *w, struct op_target *tg,
                        struct spool_writer *sw) {
  const struct spool_entry *e = tg->entry;
  for (size_t i = 0; i < e->num_rcpts; i++) {
    if (spool_scan_rcpt_done(&w->scan, e->queue_id, (uint32_t)i)) {
      continue;
    }
    struct spool_done d = {e->queue_id, (uint32_t)i, SPOOL_OUTCOME_DELETED,
                           w->now_ms};
    if (spool_writer_add_done(sw, &d, NULL) != 0) {
      return -1;
    }
    tg->num_records++;
  }
  return 0;
}

/* stage_hold stages a HOLD or RELEASE one generation above the last. */
static int stage_hold(struct offline *w, struct op_target *tg,
                      struct spool_writer *sw, int held) {
  const struct spool_entry *e = tg->entry;
  if (e->hold_gen == UINT32_MAX) {
    errno = EOVERFLOW;
    return -1;
  }
  struct spool_hold h = {e->queue_id, e->hold_gen + 1, (uint8_t)held,
                         w->now_ms};
  if (spool_writer_add_hold(sw, &h, NULL) != 0) {
    return -1;
  }
  tg->num_records = 1;
  return 0;
}

/* offline_stage stages the records of one target (or marks it a no-op). */
static void offline_stage(struct offline *w, struct op_target *tg) {
  enum queue_op op = w->a->op;
  if (tg->entry == NULL) {
    return;
  }
  if (op == OP_HOLD && tg->entry->held) {
    tg->noop = "already held";
    return;
  }
  if (op == OP_RELEASE && !tg->entry->held) {
    tg->noop = "not held";
    return;
  }
  struct spool_writer *sw = offline_writer(w, tg->id);
  int rc = -1;
  if (sw != NULL) {
    rc = op == OP_DELETE ? stage_delete(w, tg, sw)
                         : stage_hold(w, tg, sw, op == OP_HOLD);
  }
  /* A failed add leaves nothing of its own staged, but records of this
   * target staged before it would still be written: fail the writer. */
  if (rc != 0) {
    tg->err = errno ? errno : EIO;
    w->writer_err[id_thread(tg->id)] = tg->err;
  }
  tg->staged = rc == 0;
}

/* offline_flush writes and fdatasyncs every writer's records. */
static void offline_flush(struct offline *w) {
  for (unsigned t = 0; t < SPOOL_MAX_THREADS; t++) {
    struct spool_writer *sw = w->writers[t];
    if (sw == NULL) {
      continue;
    }
    if (w->writer_err[t] != 0) { /* an add failed: write nothing there */
      spool_writer_fail_staged(sw, -w->writer_err[t], NULL, NULL);
    } else if (spool_writer_sync_flush(sw, NULL, NULL) != 0) {
      w->writer_err[t] = errno ? errno : EIO;
    }
    spool_writer_close(sw);
    w->writers[t] = NULL;
  }
}

/* offline_report prints each target's result. */
static void offline_report(struct offline *w, struct op_tally *t) {
  const struct op_desc *d = &ops[w->a->op];
  for (size_t i = 0; i < w->num_targets; i++) {
    const struct op_target *tg = &w->targets[i];
    int err = tg->err ? tg->err : w->writer_err[id_thread(tg->id)];
    char what[160];
    if (tg->entry == NULL) {
      report(t, 1, tg->id, "no such message");
    } else if (tg->noop != NULL) {
      report(t, 0, tg->id, tg->noop);
    } else if (!tg->staged || err != 0) {
      snprintf(what, sizeof what, "not %s: spool write failed: %s", d->done,
               strerror(err ? err : EIO));
      report(t, 1, tg->id, what);
    } else {
      if (w->a->op == OP_DELETE) {
        snprintf(what, sizeof what, "deleted (%zu recipient%s)",
                 tg->num_records, tg->num_records == 1 ? "" : "s");
      } else {
        snprintf(what, sizeof what, "%s", d->done);
      }
      report(t, 0, tg->id, what);
      t->done++;
    }
  }
}

/* offline_run applies the operation to the spool with postseald stopped.
 * Returns 0 (results in t) or -1 (printed). */
static int offline_run(const struct op_args *a, struct op_tally *t) {
  struct offline w = {.a = a, .lock_fd = -1, .now_ms = cli_now_ms()};
  struct stat st;
  int rc = 0;
  if (stat(a->o.spool_dir, &st) != 0 && errno == ENOENT) {
    /* No spool: nothing queued; create nothing. */
  } else if (offline_lock(&w) != 0 || queue_scan(a->o.spool_dir, &w.scan)) {
    rc = -1;
  }
  if (rc == 0) {
    rc = offline_targets(&w);
  }
  if (rc == 0) {
    for (size_t i = 0; i < w.num_targets; i++) {
      offline_stage(&w, &w.targets[i]);
    }
    offline_flush(&w);
    offline_report(&w, t);
  }
  free(w.targets);
  spool_scan_free(&w.scan);
  if (w.lock_fd >= 0) {
    close(w.lock_fd);
  }
  return rc;
}

/* ---- commands ---- */

/* op_run runs delete, hold or release: online if postseald answers, else
 * offline. */
static int op_run(enum queue_op op, int argc, char **argv) {
  struct op_args a;
  struct op_tally t = {0};
  int rc = op_args_parse(&a, op, argc, argv);
  if (rc == 0) {
    int r = online_run(&a, &t);
    if (r == 1) {
      r = offline_run(&a, &t);
    }
    if (r == 0) {
      report_summary(&a, &t);
    }
    rc = r != 0 || t.failed > 0 ? CLI_FAIL : CLI_OK;
  }
  op_args_free(&a);
  return fflush(stdout) != 0 ? CLI_FAIL : rc;
}

int cmd_queue_delete(int argc, char **argv) {
  return op_run(OP_DELETE, argc, argv);
}

int cmd_queue_hold(int argc, char **argv) {
  return op_run(OP_HOLD, argc, argv);
}

int cmd_queue_release(int argc, char **argv) {
  return op_run(OP_RELEASE, argc, argv);
}

/* lock_probe: 1 if someone holds the spool lock, else 0. Creates nothing
 * and holds a shared lock for an instant only. */
static int lock_probe(const char *dir) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/" SPOOL_LOCK_NAME, dir) >=
      (int)sizeof path) {
    return 0;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return 0;
  }
  int busy = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);
  return busy;
}

int cmd_queue_flush(int argc, char **argv) {
  struct op_args a;
  struct op_tally t = {0};
  int rc = op_args_parse(&a, OP_FLUSH, argc, argv);
  if (rc == 0) {
    int r = online_run(&a, &t);
    if (r == 1 && lock_probe(a.o.spool_dir)) {
      fprintf(stderr,
              "postseal: postseald seems to run (%s is locked) but does not "
              "answer on %s\n",
              a.o.spool_dir, a.o.socket_path ? a.o.socket_path : "(none)");
    } else if (r == 1) {
      fprintf(stderr, "postseal: postseald is not running; nothing to flush\n");
    } else if (r == 0) {
      report_summary(&a, &t);
    }
    rc = r != 0 || t.failed > 0 ? CLI_FAIL : CLI_OK;
  }
  op_args_free(&a);
  return fflush(stdout) != 0 ? CLI_FAIL : rc;
}
