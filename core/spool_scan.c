/* core/spool_scan.c — recovery and reading: walk every segment, collect
 * queued messages, DONE and HOLD/RELEASE records, cut torn tails; see
 * spool.h.
 *
 * Reads with pread into a window, never mmap: a writer may truncate a
 * segment after a failed batch while the CLI reads it, and touching an
 * mmap'd page past the new end would raise SIGBUS. A read that comes up
 * short is treated like a torn tail. A read-only scan never writes, and
 * skips a segment that vanished after the listing (reclaimed by a
 * daemon's start-up repair).
 *
 * Reclamation (repair only) runs after every segment was read: segments
 * are joined in groups with a union-find over their indexes in the sorted
 * name list, a group is kept if anything in it is still needed, and every
 * other segment is unlinked. */
#include "core/spool.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Read at least this much per pread so small records are batched. */
#define SPOOL_SCAN_WINDOW (1u << 20)

/* A segment being read: a window of its bytes starting at win_off. */
struct seg_reader {
  int fd;
  uint64_t size; /* at open */
  struct buf win;
  uint64_t win_off;
};

/* What reclamation needs to know about one segment file. */
struct seg_info {
  size_t parent; /* union-find: segments that must go together */
  unsigned thread;
  uint32_t seq;
  uint8_t named;       /* spool_segment_name_parse accepted the name */
  uint8_t removed;     /* gone: headerless (removed by repair) or vanished */
  uint8_t has_message; /* holds at least one MESSAGE */
  uint8_t keep;        /* on a group's root: the group stays */
  uint8_t reclaimed;
};

/* A DONE record as read, with the index of the segment holding it. */
struct scan_done {
  struct spool_done_key key;
  size_t seg;
};

/* A HOLD or RELEASE record as read. `order` is its position in scan order
 * (segments by name, records by offset): the tie-break between records of
 * one generation. */
struct scan_hold {
  uint64_t queue_id;
  uint32_t gen;
  uint8_t held;
  size_t seg;
  size_t order;
};

/* Everything a scan collects before it is sorted into struct spool_scan. */
struct scan_state {
  const char *dir;
  int repair;
  char *err;
  size_t err_len;
  struct spool_scan *out;
  size_t cap_entries;
  char **names; /* segment file names, sorted */
  struct seg_info *segs;
  size_t num_segs;
  size_t cur_seg; /* index of the segment being read */
  struct scan_done *dones;
  size_t num_dones;
  size_t cap_dones;
  struct scan_hold *holds;
  size_t num_holds;
  size_t cap_holds;
  struct buf rcpt_storage;
};

static int scan_fail(struct scan_state *s, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int scan_fail(struct scan_state *s, int errnum, const char *fmt, ...) {
  if (s->err && s->err_len) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, s->err_len, fmt, ap);
    va_end(ap);
  }
  errno = errnum;
  return -1;
}

/* reader_get makes up to `want` bytes at `off` available; sets *out and
 * returns how many there are (fewer at the end of the file or if it
 * shrank), or -1 on a read error. */
static long reader_get(struct seg_reader *r, uint64_t off, size_t want,
                       const uint8_t **out) {
  uint64_t left = r->size - off;
  if (want > left) {
    want = (size_t)left;
  }
  if (off >= r->win_off && off + want <= r->win_off + r->win.len) {
    *out = r->win.data + (off - r->win_off);
    return (long)want;
  }
  size_t fetch = want > SPOOL_SCAN_WINDOW ? want : SPOOL_SCAN_WINDOW;
  fetch = fetch > left ? (size_t)left : fetch;
  buf_reset(&r->win);
  if (buf_reserve(&r->win, fetch) != 0) {
    errno = ENOMEM;
    return -1;
  }
  r->win_off = off;
  while (r->win.len < fetch) {
    ssize_t n = pread(r->fd, r->win.data + r->win.len, fetch - r->win.len,
                      (off_t)(off + r->win.len));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      return -1;
    }
    if (n == 0) {
      break; /* shrank under us: what is missing reads as a torn tail */
    }
    r->win.len += (size_t)n;
  }
  *out = r->win.data;
  return (long)(want < r->win.len ? want : r->win.len);
}

/* reader_record reads the record at off. Returns OK, SHORT or BAD (a
 * torn tail either way), or -1 on a read error. */
static int reader_record(struct seg_reader *r, uint64_t off, uint8_t *type,
                         const uint8_t **payload, size_t *payload_len,
                         size_t *record_len) {
  const uint8_t *p;
  long n = reader_get(r, off, SPOOL_RECORD_HEADER_LEN, &p);
  if (n < 0) {
    return -1;
  }
  size_t want;
  enum spool_decode_result res = spool_record_peek(p, (size_t)n, &want);
  if (res != SPOOL_DECODE_OK) {
    return res;
  }
  n = reader_get(r, off, want, &p);
  if (n < 0) {
    return -1;
  }
  return spool_record_decode(p, (size_t)n, type, payload, payload_len,
                             record_len);
}

static int scan_add_entry(struct scan_state *s, const char *seg, uint64_t off,
                          size_t record_len, const struct spool_message *m) {
  struct spool_scan *out = s->out;
  if (out->num_entries == s->cap_entries) {
    size_t cap = s->cap_entries ? s->cap_entries * 2 : 256;
    struct spool_entry *e = realloc(out->entries, cap * sizeof *e);
    if (e == NULL) {
      return scan_fail(s, ENOMEM, "out of memory");
    }
    out->entries = e;
    s->cap_entries = cap;
  }
  struct spool_entry *e = &out->entries[out->num_entries++];
  memset(e, 0, sizeof *e);
  e->queue_id = m->queue_id;
  e->arrival_ms = m->arrival_ms;
  snprintf(e->segment, sizeof e->segment, "%s", seg);
  e->offset = off;
  e->record_len = record_len;
  e->num_rcpts = m->num_rcpts;
  e->body_len = m->body_len;
  s->segs[s->cur_seg].has_message = 1;
  if (m->queue_id > out->max_queue_id) {
    out->max_queue_id = m->queue_id;
  }
  return 0;
}

static int scan_add_done(struct scan_state *s, const struct spool_done *d) {
  if (s->num_dones == s->cap_dones) {
    size_t cap = s->cap_dones ? s->cap_dones * 2 : 256;
    struct scan_done *k = realloc(s->dones, cap * sizeof *k);
    if (k == NULL) {
      return scan_fail(s, ENOMEM, "out of memory");
    }
    s->dones = k;
    s->cap_dones = cap;
  }
  s->dones[s->num_dones++] = (struct scan_done){
      .key = {d->queue_id, d->rcpt_index},
      .seg = s->cur_seg,
  };
  /* A DONE may outlive its MESSAGE (runtime reclaim deletes the MESSAGE's
   * segment first): new ids must stay above it too, or a message after a
   * clock step back could inherit it. */
  if (d->queue_id > s->out->max_queue_id) {
    s->out->max_queue_id = d->queue_id;
  }
  return 0;
}

static int scan_add_hold(struct scan_state *s, const struct spool_hold *h) {
  if (s->num_holds == s->cap_holds) {
    size_t cap = s->cap_holds ? s->cap_holds * 2 : 64;
    struct scan_hold *k = realloc(s->holds, cap * sizeof *k);
    if (k == NULL) {
      return scan_fail(s, ENOMEM, "out of memory");
    }
    s->holds = k;
    s->cap_holds = cap;
  }
  s->holds[s->num_holds] = (struct scan_hold){
      .queue_id = h->queue_id,
      .gen = h->gen,
      .held = h->held,
      .seg = s->cur_seg,
      .order = s->num_holds,
  };
  s->num_holds++;
  if (h->queue_id > s->out->max_queue_id) {
    s->out->max_queue_id = h->queue_id; /* as for DONEs */
  }
  return 0;
}

/* scan_payload takes one valid record. Returns 1 if it belongs to the
 * valid part, 0 if it ends it (a payload that does not decode, or a second
 * SEGMENT record), -1 on error. */
static int scan_payload(struct scan_state *s, const char *seg, uint64_t off,
                        uint8_t type, const uint8_t *payload,
                        size_t payload_len, size_t record_len) {
  if (type == SPOOL_REC_MESSAGE) {
    struct spool_message m;
    if (spool_message_decode(payload, payload_len, &m, &s->rcpt_storage)) {
      return 0;
    }
    return scan_add_entry(s, seg, off, record_len, &m) == 0 ? 1 : -1;
  }
  if (type == SPOOL_REC_DONE) {
    struct spool_done d;
    if (spool_done_decode(payload, payload_len, &d) != 0) {
      return 0;
    }
    return scan_add_done(s, &d) == 0 ? 1 : -1;
  }
  if (type == SPOOL_REC_HOLD || type == SPOOL_REC_RELEASE) {
    struct spool_hold h;
    if (spool_hold_decode(type, payload, payload_len, &h) != 0) {
      return 0;
    }
    return scan_add_hold(s, &h) == 0 ? 1 : -1;
  }
  return 0;
}

/* scan_walk walks the records after the segment header; sets *out_good to
 * the end of the valid part. */
static int scan_walk(struct scan_state *s, struct seg_reader *r,
                     const char *seg, uint64_t off, uint64_t *out_good) {
  while (off < r->size) {
    uint8_t type;
    const uint8_t *payload;
    size_t payload_len, record_len;
    int res = reader_record(r, off, &type, &payload, &payload_len, &record_len);
    if (res < 0) {
      return scan_fail(s, errno, "seg/%s: read: %s", seg, strerror(errno));
    }
    if (res != SPOOL_DECODE_OK) {
      break;
    }
    int keep =
        scan_payload(s, seg, off, type, payload, payload_len, record_len);
    if (keep < 0) {
      return -1;
    }
    if (keep == 0) {
      break;
    }
    off += record_len;
  }
  *out_good = off;
  return 0;
}

/* scan_header checks the SEGMENT record at offset 0. Returns its length,
 * 0 if the header is missing or torn (a segment created but never synced),
 * or -1 if it is something we must not touch (another format or version). */
static long scan_header(struct scan_state *s, struct seg_reader *r,
                        const char *seg) {
  uint8_t type;
  const uint8_t *payload;
  size_t payload_len, record_len;
  int res = reader_record(r, 0, &type, &payload, &payload_len, &record_len);
  if (res < 0) {
    return scan_fail(s, errno, "seg/%s: read: %s", seg, strerror(errno));
  }
  if (res != SPOOL_DECODE_OK) {
    return 0;
  }
  struct spool_segment_header h;
  if (type != SPOOL_REC_SEGMENT ||
      spool_segment_header_decode(payload, payload_len, &h) != 0) {
    return scan_fail(s, EPROTO,
                     "seg/%s: not a postseal segment of a known version", seg);
  }
  return (long)record_len;
}

/* scan_cut makes the torn tail go away: truncate to `good` and fsync, or
 * remove a segment with no valid header at all. */
static int scan_cut(struct scan_state *s, int seg_dirfd, struct seg_reader *r,
                    const char *seg, uint64_t good) {
  if (good == 0) {
    if (unlinkat(seg_dirfd, seg, 0) != 0 || fsync(seg_dirfd) != 0) {
      return scan_fail(s, errno, "seg/%s: unlink: %s", seg, strerror(errno));
    }
    return 0;
  }
  if (ftruncate(r->fd, (off_t)good) != 0 || fsync(r->fd) != 0) {
    return scan_fail(s, errno, "seg/%s: truncate: %s", seg, strerror(errno));
  }
  return 0;
}

/* zero_tail: 1 if the bytes from `from` to the end of the file are all
 * zero (a pre-zeroed segment's unused part: spool_writer_set_prezero),
 * 0 if not, -1 on a read error. */
static int zero_tail(int fd, uint64_t from, uint64_t size) {
  uint64_t chunk[8192 / sizeof(uint64_t)];
  while (from < size) {
    size_t want =
        size - from < sizeof chunk ? (size_t)(size - from) : sizeof chunk;
    ssize_t n = pread(fd, chunk, want, (off_t)from);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return n < 0 ? -1 : 0; /* shrank under us: not ours to judge */
    }
    const uint8_t *p = (const uint8_t *)chunk;
    size_t i = 0;
    for (; i + 8 <= (size_t)n; i += 8) {
      if (chunk[i / 8] != 0) {
        return 0;
      }
    }
    for (; i < (size_t)n; i++) {
      if (p[i] != 0) {
        return 0;
      }
    }
    from += (uint64_t)n;
  }
  return 1;
}

/* scan_segment reads one segment file. */
static int scan_segment(struct scan_state *s, int seg_dirfd, const char *seg) {
  struct seg_reader r = {.fd = -1};
  int flags = (s->repair ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOFOLLOW;
  r.fd = openat(seg_dirfd, seg, flags);
  if (r.fd < 0 && errno == ENOENT && !s->repair) {
    /* Gone since the listing: a starting daemon's repair reclaimed it, and
     * it only reclaims what nobody needs. */
    s->segs[s->cur_seg].removed = 1;
    return 0;
  }
  struct stat st;
  if (r.fd < 0 || fstat(r.fd, &st) != 0) {
    int rc = scan_fail(s, errno, "seg/%s: open: %s", seg, strerror(errno));
    if (r.fd >= 0) {
      close(r.fd);
    }
    return rc;
  }
  r.size = (uint64_t)st.st_size;
  uint64_t good = 0;
  long hdr = r.size ? scan_header(s, &r, seg) : 0;
  int rc = hdr < 0 ? -1 : 0;
  if (hdr > 0) {
    rc = scan_walk(s, &r, seg, (uint64_t)hdr, &good);
  }
  s->out->num_segments++;
  int torn = hdr == 0 || good < r.size; /* headerless: created, never synced */
  int zeros = 0; /* the tail is a pre-zeroed segment's unused part */
  if (rc == 0 && torn && hdr > 0) {
    zeros = zero_tail(r.fd, good, r.size);
    if (zeros < 0) {
      rc = scan_fail(s, errno, "seg/%s: read: %s", seg, strerror(errno));
    }
  }
  if (rc == 0 && torn) {
    s->out->num_torn += zeros == 0;
    if (s->repair) {
      rc = scan_cut(s, seg_dirfd, &r, seg, good);
      s->segs[s->cur_seg].removed = rc == 0 && good == 0;
    }
  }
  close(r.fd);
  buf_free(&r.win);
  return rc;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int seg_name_ok(const char *name) {
  size_t n = strlen(name);
  return name[0] != '.' && n > 4 && n < SPOOL_SEGMENT_NAME_MAX &&
         strcmp(name + n - 4, ".seg") == 0;
}

/* list_segments returns the sorted *.seg names of the directory. */
static int list_segments(struct scan_state *s, int seg_dirfd, char ***out,
                         size_t *out_num) {
  int fd = dup(seg_dirfd);
  DIR *d = fd < 0 ? NULL : fdopendir(fd);
  if (d == NULL) {
    if (fd >= 0) {
      close(fd);
    }
    return scan_fail(s, errno, "%s/seg: %s", s->dir, strerror(errno));
  }
  char **names = NULL;
  size_t num = 0, cap = 0;
  struct dirent *de;
  int rc = 0;
  while (rc == 0 && (de = readdir(d)) != NULL) {
    if (!seg_name_ok(de->d_name)) {
      continue;
    }
    if (num == cap) {
      cap = cap ? cap * 2 : 64;
      char **p = realloc(names, cap * sizeof *p);
      rc = p ? 0 : -1;
      names = p ? p : names;
    }
    if (rc == 0 && (names[num] = strdup(de->d_name)) != NULL) {
      num++;
    } else {
      rc = scan_fail(s, ENOMEM, "out of memory");
    }
  }
  closedir(d);
  if (num > 1) {
    qsort(names, num, sizeof *names, name_cmp);
  }
  *out = names;
  *out_num = num;
  return rc;
}

static int entry_cmp(const void *a, const void *b) {
  const struct spool_entry *x = a, *y = b;
  if (x->queue_id != y->queue_id) {
    return x->queue_id < y->queue_id ? -1 : 1;
  }
  int c = strcmp(x->segment, y->segment);
  if (c != 0) {
    return c;
  }
  return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int done_cmp(const void *a, const void *b) {
  const struct spool_done_key *x = a, *y = b;
  if (x->queue_id != y->queue_id) {
    return x->queue_id < y->queue_id ? -1 : 1;
  }
  return x->rcpt_index < y->rcpt_index ? -1 : x->rcpt_index > y->rcpt_index;
}

/* raw_done_cmp orders DONE records as read by (queue id, recipient). */
static int raw_done_cmp(const void *a, const void *b) {
  return done_cmp(&((const struct scan_done *)a)->key,
                  &((const struct scan_done *)b)->key);
}

/* hold_cmp orders HOLD/RELEASE records by (queue id, generation, scan
 * order): the last of a queue id's run is the one that wins. */
static int hold_cmp(const void *a, const void *b) {
  const struct scan_hold *x = a, *y = b;
  if (x->queue_id != y->queue_id) {
    return x->queue_id < y->queue_id ? -1 : 1;
  }
  if (x->gen != y->gen) {
    return x->gen < y->gen ? -1 : 1;
  }
  return x->order < y->order ? -1 : x->order > y->order;
}

/* seg_find returns the first index of the union-find group of segment i
 * (its root), halving paths on the way. */
static size_t seg_find(struct seg_info *segs, size_t i) {
  while (segs[i].parent != i) {
    segs[i].parent = segs[segs[i].parent].parent;
    i = segs[i].parent;
  }
  return i;
}

static void seg_union(struct seg_info *segs, size_t a, size_t b) {
  a = seg_find(segs, a);
  b = seg_find(segs, b);
  if (a != b) {
    segs[b].parent = a;
  }
}

/* seg_of returns the index of the segment an entry was read from. */
static size_t seg_of(const struct scan_state *s, const struct spool_entry *e) {
  const char *key = e->segment;
  char **hit = bsearch(&key, s->names, s->num_segs, sizeof *s->names, name_cmp);
  assert(hit != NULL && "entry from a segment that was not listed");
  return (size_t)(hit - s->names);
}

/* reclaim_group joins each MESSAGE's segment with the segments of the
 * other MESSAGEs of its queue id and of every DONE naming it: they are
 * deleted together or not at all. Entries and raw DONEs are sorted. */
static void reclaim_group(struct scan_state *s) {
  const struct spool_scan *out = s->out;
  for (size_t i = 1; i < out->num_entries; i++) {
    if (out->entries[i].queue_id == out->entries[i - 1].queue_id) {
      seg_union(s->segs, seg_of(s, &out->entries[i - 1]),
                seg_of(s, &out->entries[i]));
    }
  }
  for (size_t i = 0; i < s->num_dones; i++) {
    const struct spool_entry *e =
        spool_scan_find(out, s->dones[i].key.queue_id);
    if (e != NULL) {
      seg_union(s->segs, s->dones[i].seg, seg_of(s, e));
    }
  }
  for (size_t i = 0; i < s->num_holds; i++) {
    const struct spool_entry *e = spool_scan_find(out, s->holds[i].queue_id);
    if (e != NULL) {
      seg_union(s->segs, s->holds[i].seg, seg_of(s, e));
    }
  }
}

/* scan_apply_holds sets each entry's hold state from the winning record of
 * its queue id (the last of its run). Entries and holds are sorted. */
static void scan_apply_holds(struct scan_state *s) {
  struct spool_scan *out = s->out;
  size_t j = 0;
  for (size_t i = 0; i < out->num_entries; i++) {
    struct spool_entry *e = &out->entries[i];
    while (j < s->num_holds && s->holds[j].queue_id < e->queue_id) {
      j++;
    }
    size_t last = j;
    while (last < s->num_holds && s->holds[last].queue_id == e->queue_id) {
      last++;
    }
    if (last > j) { /* j stays: a duplicate entry of the id gets it too */
      e->hold_gen = s->holds[last - 1].gen;
      e->held = s->holds[last - 1].held;
    }
  }
}

/* scan_collect_dones keeps each distinct DONE (queue id, recipient) that
 * names a recipient of an entry, into out->dones. Raw DONEs are sorted. */
static int scan_collect_dones(struct scan_state *s) {
  struct spool_scan *out = s->out;
  out->dones = malloc((s->num_dones ? s->num_dones : 1) * sizeof *out->dones);
  if (out->dones == NULL) {
    return scan_fail(s, ENOMEM, "out of memory");
  }
  size_t kept = 0;
  for (size_t i = 0; i < s->num_dones; i++) {
    const struct spool_done_key *k = &s->dones[i].key;
    if (kept > 0 && done_cmp(&out->dones[kept - 1], k) == 0) {
      continue;
    }
    const struct spool_entry *e = spool_scan_find(out, k->queue_id);
    if (e == NULL || k->rcpt_index >= e->num_rcpts) {
      continue;
    }
    out->dones[kept++] = *k;
  }
  out->num_dones = kept;
  return 0;
}

/* scan_count_dones sets each entry's num_done from out->dones. */
static void scan_count_dones(struct spool_scan *out) {
  size_t j = 0;
  for (size_t i = 0; i < out->num_entries; i++) {
    struct spool_entry *e = &out->entries[i];
    while (j < out->num_dones && out->dones[j].queue_id < e->queue_id) {
      j++;
    }
    size_t n = 0;
    while (j + n < out->num_dones &&
           out->dones[j + n].queue_id == e->queue_id) {
      n++;
    }
    e->num_done = n;
  }
}

/* reclaim_mark_keep marks the groups that must stay: those holding a
 * thread's newest segment (the sequence high-water mark), a file whose name
 * is not a segment name, or a message with a recipient not yet done. */
static void reclaim_mark_keep(struct scan_state *s) {
  size_t newest[256]; /* per thread: 2 hex digits in the name */
  for (size_t t = 0; t < 256; t++) {
    newest[t] = SIZE_MAX;
  }
  for (size_t i = 0; i < s->num_segs; i++) {
    const struct seg_info *g = &s->segs[i];
    if (!g->named) {
      s->segs[seg_find(s->segs, i)].keep = 1;
    } else if (!g->removed) {
      newest[g->thread] = i; /* names sort by thread, then sequence */
    }
  }
  for (size_t t = 0; t < 256; t++) {
    if (newest[t] != SIZE_MAX) {
      s->segs[seg_find(s->segs, newest[t])].keep = 1;
    }
  }
  for (size_t i = 0; i < s->out->num_entries; i++) {
    const struct spool_entry *e = &s->out->entries[i];
    if (e->num_done < e->num_rcpts) {
      s->segs[seg_find(s->segs, seg_of(s, e))].keep = 1;
    }
  }
}

/* reclaim_unlink deletes every segment of a group not kept, those holding
 * MESSAGE records first: in a group without cross references a crash then
 * leaves DONEs without their MESSAGE (harmless), not the other way round. */
static int reclaim_unlink(struct scan_state *s, int seg_dirfd) {
  for (int pass = 0; pass < 2; pass++) {
    for (size_t i = 0; i < s->num_segs; i++) {
      struct seg_info *g = &s->segs[i];
      if (g->removed || s->segs[seg_find(s->segs, i)].keep ||
          g->has_message != (pass == 0)) {
        continue;
      }
      if (unlinkat(seg_dirfd, s->names[i], 0) != 0 || fsync(seg_dirfd) != 0) {
        return scan_fail(s, errno, "seg/%s: reclaim: %s", s->names[i],
                         strerror(errno));
      }
      g->reclaimed = 1;
      s->out->num_reclaimed++;
    }
  }
  return 0;
}

/* reclaim_drop leaves the entries of reclaimed segments, and the DONE keys
 * naming them, out of the result. A group holds every entry with its queue
 * id, so no DONE key of a kept entry goes. */
static void reclaim_drop(struct scan_state *s) {
  struct spool_scan *out = s->out;
  size_t n = 0;
  for (size_t i = 0; i < out->num_entries; i++) {
    if (!s->segs[seg_of(s, &out->entries[i])].reclaimed) {
      out->entries[n++] = out->entries[i];
    }
  }
  out->num_entries = n;
  n = 0;
  for (size_t i = 0; i < out->num_dones; i++) {
    if (spool_scan_find(out, out->dones[i].queue_id) != NULL) {
      out->dones[n++] = out->dones[i];
    }
  }
  out->num_dones = n;
}

/* reclaim_report lists the segments left after reclamation with their
 * groups, for the daemon's reclamation while it runs. */
static int reclaim_report(struct scan_state *s) {
  struct spool_scan *out = s->out;
  out->segments = calloc(s->num_segs ? s->num_segs : 1, sizeof *out->segments);
  if (out->segments == NULL) {
    return scan_fail(s, ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < s->num_segs; i++) {
    const struct seg_info *g = &s->segs[i];
    if (g->removed || g->reclaimed) {
      continue;
    }
    struct spool_scan_segment *o = &out->segments[out->num_kept_segments++];
    snprintf(o->name, sizeof o->name, "%s", s->names[i]);
    o->group = seg_find(s->segs, i);
    o->has_message = g->has_message;
  }
  return 0;
}

/* scan_finish sorts entries and DONEs, counts them per entry and, with
 * repair, reclaims finished segments. */
static int scan_finish(struct scan_state *s, int seg_dirfd) {
  struct spool_scan *out = s->out;
  if (out->num_entries > 1) {
    qsort(out->entries, out->num_entries, sizeof *out->entries, entry_cmp);
  }
  if (s->num_dones > 1) {
    qsort(s->dones, s->num_dones, sizeof *s->dones, raw_done_cmp);
  }
  if (s->num_holds > 1) {
    qsort(s->holds, s->num_holds, sizeof *s->holds, hold_cmp);
  }
  scan_apply_holds(s);
  if (s->repair) {
    reclaim_group(s);
  }
  if (scan_collect_dones(s) != 0) {
    return -1;
  }
  scan_count_dones(out);
  if (!s->repair) {
    return 0;
  }
  reclaim_mark_keep(s);
  if (reclaim_unlink(s, seg_dirfd) != 0) {
    return -1;
  }
  reclaim_drop(s);
  return reclaim_report(s);
}

/* scan_segs_init sets up the reclamation record of every listed segment. */
static int scan_segs_init(struct scan_state *s) {
  s->segs = calloc(s->num_segs ? s->num_segs : 1, sizeof *s->segs);
  if (s->segs == NULL) {
    return scan_fail(s, ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < s->num_segs; i++) {
    struct seg_info *g = &s->segs[i];
    g->parent = i;
    g->named =
        (uint8_t)spool_segment_name_parse(s->names[i], &g->thread, &g->seq);
  }
  return 0;
}

static int scan_dir(struct scan_state *s, int seg_dirfd) {
  int rc = list_segments(s, seg_dirfd, &s->names, &s->num_segs);
  if (rc == 0) {
    rc = scan_segs_init(s);
  }
  for (size_t i = 0; rc == 0 && i < s->num_segs; i++) {
    s->cur_seg = i;
    rc = scan_segment(s, seg_dirfd, s->names[i]);
  }
  return rc;
}

/* scan_state_free releases what the scan kept for itself. */
static void scan_state_free(struct scan_state *s) {
  for (size_t i = 0; i < s->num_segs; i++) {
    free(s->names[i]);
  }
  free(s->names);
  free(s->segs);
  free(s->dones);
  free(s->holds);
  buf_free(&s->rcpt_storage);
}

int spool_scan(const char *dir, int repair, struct spool_scan *out, char *err,
               size_t err_len) {
  struct scan_state s = {
      .dir = dir, .repair = repair, .err = err, .err_len = err_len, .out = out};
  memset(out, 0, sizeof *out);
  char path[4096];
  if (snprintf(path, sizeof path, "%s/seg", dir) >= (int)sizeof path) {
    return scan_fail(&s, ENAMETOOLONG, "%s: path too long", dir);
  }
  int seg_dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (seg_dirfd < 0) {
    if (errno == ENOENT) {
      return 0; /* no spool yet: nothing queued */
    }
    return scan_fail(&s, errno, "%s: %s", path, strerror(errno));
  }
  int rc = scan_dir(&s, seg_dirfd);
  if (rc == 0) {
    rc = scan_finish(&s, seg_dirfd);
  }
  int saved = errno;
  close(seg_dirfd);
  scan_state_free(&s);
  if (rc != 0) {
    spool_scan_free(out);
    errno = saved;
  }
  return rc;
}

void spool_scan_free(struct spool_scan *scan) {
  free(scan->entries);
  free(scan->dones);
  free(scan->segments);
  memset(scan, 0, sizeof *scan);
}

const struct spool_entry *spool_scan_find(const struct spool_scan *scan,
                                          uint64_t queue_id) {
  size_t lo = 0, hi = scan->num_entries;
  while (lo < hi) { /* first entry with id >= queue_id */
    size_t mid = lo + (hi - lo) / 2;
    if (scan->entries[mid].queue_id < queue_id) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  if (lo < scan->num_entries && scan->entries[lo].queue_id == queue_id) {
    return &scan->entries[lo];
  }
  return NULL;
}

int spool_scan_rcpt_done(const struct spool_scan *scan, uint64_t queue_id,
                         uint32_t rcpt_index) {
  struct spool_done_key key = {queue_id, rcpt_index};
  if (scan->num_dones == 0) {
    return 0;
  }
  return bsearch(&key, scan->dones, scan->num_dones, sizeof key, done_cmp) !=
         NULL;
}

int spool_scan_held(const struct spool_scan *scan, uint64_t queue_id) {
  const struct spool_entry *e = spool_scan_find(scan, queue_id);
  return e != NULL && e->held ? 1 : 0;
}

/* read_exact preads len bytes at off; a short read is EIO (the record was
 * found by a scan, so the file is not expected to be shorter). */
static int read_exact(int fd, uint8_t *p, size_t len, uint64_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      errno = n < 0 ? errno : EIO;
      return -1;
    }
    got += (size_t)n;
  }
  return 0;
}

int spool_read_message(const char *dir, const struct spool_entry *entry,
                       struct buf *storage, struct spool_message *out,
                       struct buf *rcpt_storage) {
  char path[4096];
  if (strchr(entry->segment, '/') != NULL ||
      entry->record_len >
          SPOOL_RECORD_HEADER_LEN + (uint64_t)SPOOL_MAX_RECORD ||
      snprintf(path, sizeof path, "%s/seg/%s", dir, entry->segment) >=
          (int)sizeof path) {
    errno = EINVAL;
    return -1;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -1;
  }
  size_t len = (size_t)entry->record_len;
  buf_reset(storage);
  int rc = buf_reserve(storage, len);
  if (rc != 0) {
    errno = ENOMEM;
  } else {
    rc = read_exact(fd, storage->data, len, entry->offset);
  }
  close(fd);
  if (rc != 0) {
    return -1;
  }
  storage->len = len;
  uint8_t type;
  const uint8_t *payload;
  size_t payload_len, record_len;
  if (spool_record_decode(storage->data, len, &type, &payload, &payload_len,
                          &record_len) != SPOOL_DECODE_OK ||
      type != SPOOL_REC_MESSAGE || record_len != len ||
      spool_message_decode(payload, payload_len, out, rcpt_storage) != 0) {
    errno = EPROTO;
    return -1;
  }
  return 0;
}
