/* core/spool_writer.c — the per-thread spool writer: queue ids, staging,
 * group-commit batches, rotation; see spool.h.
 *
 * Memory: each record's header and envelope are encoded at add time into
 * an arena (a struct buf); bodies are referenced, never copied. There are
 * two arenas: `staged` grows as records are added, `flight` holds the
 * batch the loop is writing and does not move until flush_done. At
 * flush_begin the arenas swap and the staged records that did not fit the
 * batch are copied back into the (empty) staged arena, so in-flight iovecs
 * never point into memory that may be reallocated.
 *
 * Failure: after a failed batch the segment is truncated back to its
 * durable length and the writer moves on to a fresh segment. After a failed
 * fdatasync Linux may have dropped the dirty pages and their error, so the
 * file's cached state is not trusted for further appends. */
#include "core/spool.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_ID_MS_BITS 42
#define SPOOL_ID_THREAD_SHIFT 16
#define SPOOL_ID_MS_SHIFT 22
#define SPOOL_ID_MS_MAX ((UINT64_C(1) << SPOOL_ID_MS_BITS) - 1)
/* Pre-zeroing pays for batches of at most chunk / this many bytes. */
#define SPOOL_PREZERO_BATCH_DIV 16
/* Attempts to create a segment whose name is taken (another writer for the
 * same thread index: a misconfiguration) before giving up. */
#define SPOOL_CREATE_TRIES 16

/* A staged or in-flight record: head (header + envelope) in an arena at
 * head_off, then optionally a body owned by the caller. */
struct spool_pending {
  void *cookie;
  size_t head_off;
  size_t head_len;
  const uint8_t *body;
  size_t body_len;
};

struct spool_pending_list {
  struct spool_pending *items;
  size_t num;
  size_t cap;
};

struct spool_writer {
  int seg_dirfd; /* <dir>/seg, fsync'd after creating segments */
  unsigned thread_index;
  uint32_t seq;
  int fd;
  char seg_name[SPOOL_SEGMENT_NAME_MAX];
  uint64_t offset;      /* durable length of the current segment */
  uint64_t target_size; /* rotate once offset reaches it */
  int need_rotate;      /* set after a failed batch */
  uint64_t next_min_id; /* no id below this is handed out */
  struct buf staged_arena;
  struct buf flight_arena;
  struct spool_pending_list staged;
  struct spool_pending_list flight;
  uint64_t flight_len;
  int busy;
  /* Pre-zeroing (spool_writer_set_prezero): the file is written with
   * zeros up to zeroed_end ahead of the records, so most batches
   * overwrite blocks that already exist and their fdatasync writes no
   * metadata. zeros is a read-only anonymous mapping of prezero_chunk
   * bytes (the kernel's zero page: no memory). */
  uint64_t prezero_chunk; /* 0: off */
  uint64_t zeroed_end;    /* the file's length: records, then zeros */
  uint64_t flight_zeros;  /* zeros the in-flight batch appends */
  void *zeros;
  struct iovec iov[SPOOL_BATCH_MAX_IOV + 1]; /* + the zeros */
};

/* ---- queue ids ---- */

static uint64_t id_compose(uint64_t ms, unsigned thread, uint64_t counter) {
  return ((ms & SPOOL_ID_MS_MAX) << SPOOL_ID_MS_SHIFT) |
         ((uint64_t)thread << SPOOL_ID_THREAD_SHIFT) | (counter & 0xffff);
}

/* id_at_least returns the smallest id >= min carrying `thread`. A counter
 * that wrapped carried into the thread bits of min, so it lands in the
 * next millisecond here. */
static uint64_t id_at_least(uint64_t min, unsigned thread) {
  uint64_t ms = min >> SPOOL_ID_MS_SHIFT;
  unsigned min_thread = (unsigned)(min >> SPOOL_ID_THREAD_SHIFT) & 0x3f;
  if (min_thread == thread) {
    return min;
  }
  if (min_thread < thread) {
    return id_compose(ms, thread, 0);
  }
  return id_compose(ms + 1, thread, 0);
}

uint64_t spool_writer_new_id(struct spool_writer *w, int64_t now_ms) {
  uint64_t ms = now_ms < 0 ? 0 : (uint64_t)now_ms;
  if (ms > SPOOL_ID_MS_MAX) {
    ms = SPOOL_ID_MS_MAX;
  }
  uint64_t id = id_compose(ms, w->thread_index, 0);
  if (id < w->next_min_id) { /* same ms, clock went back, or first_id */
    id = id_at_least(w->next_min_id, w->thread_index);
  }
  w->next_min_id = id + 1;
  return id;
}

/* ---- segment files ---- */

static void segment_name(char out[SPOOL_SEGMENT_NAME_MAX], unsigned thread,
                         uint32_t seq) {
  snprintf(out, SPOOL_SEGMENT_NAME_MAX, "%02x-%08x.seg", thread, seq);
}

int spool_segment_name_parse(const char *name, unsigned *out_thread,
                             uint32_t *out_seq) {
  if (strlen(name) != 15 || name[2] != '-' || strcmp(name + 11, ".seg")) {
    return 0;
  }
  uint64_t v[2] = {0, 0};
  const char *p = name;
  for (int part = 0; part < 2; part++) {
    int digits = part == 0 ? 2 : 8;
    for (int i = 0; i < digits; i++, p++) {
      char c = *p;
      if (c >= '0' && c <= '9') {
        v[part] = v[part] * 16 + (uint64_t)(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v[part] = v[part] * 16 + (uint64_t)(c - 'a' + 10);
      } else {
        return 0;
      }
    }
    p++; /* '-' */
  }
  *out_thread = (unsigned)v[0];
  *out_seq = (uint32_t)v[1];
  return 1;
}

/* max_segment_seq finds the highest sequence number of `thread` in the
 * segment directory; sets *out_found to 0 if there is none. */
static int max_segment_seq(int dirfd, unsigned thread, uint32_t *out_seq,
                           int *out_found) {
  int fd = dup(dirfd);
  DIR *d = fd < 0 ? NULL : fdopendir(fd);
  if (d == NULL) {
    if (fd >= 0) {
      close(fd);
    }
    return -1;
  }
  *out_found = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    unsigned t;
    uint32_t seq;
    if (spool_segment_name_parse(de->d_name, &t, &seq) && t == thread &&
        (!*out_found || seq > *out_seq)) {
      *out_seq = seq;
      *out_found = 1;
    }
  }
  closedir(d);
  return 0;
}

/* segment_create makes segment `seq` (or the next free one), writes its
 * header and makes file and directory entry durable. Returns the fd and
 * sets *out_seq and *out_len, or -1 with errno (no file left behind). */
static int segment_create(struct spool_writer *w, uint32_t seq,
                          uint32_t *out_seq, uint64_t *out_len) {
  char name[SPOOL_SEGMENT_NAME_MAX];
  int fd = -1;
  for (int i = 0; i < SPOOL_CREATE_TRIES && fd < 0; i++, seq++) {
    segment_name(name, w->thread_index, seq);
    fd = openat(w->seg_dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
                0600);
    if (fd < 0 && errno != EEXIST) {
      return -1;
    }
  }
  if (fd < 0) {
    return -1;
  }
  seq--;
  long len = spool_segment_write_header(fd, w->thread_index, seq);
  if (len < 0 || fsync(w->seg_dirfd) != 0) {
    int saved = errno;
    close(fd);
    unlinkat(w->seg_dirfd, name, 0);
    errno = saved;
    return -1;
  }
  *out_seq = seq;
  *out_len = (uint64_t)len;
  return fd;
}

/* writer_rotate closes the current segment and continues in a new one. */
static int writer_rotate(struct spool_writer *w) {
  uint32_t seq;
  uint64_t len;
  int fd = segment_create(w, w->seq + 1, &seq, &len);
  if (fd < 0) {
    return -1;
  }
  if (w->fd >= 0) {
    close(w->fd);
  }
  w->fd = fd;
  w->seq = seq;
  w->offset = len;
  w->zeroed_end = len;
  w->need_rotate = 0;
  segment_name(w->seg_name, w->thread_index, seq);
  return 0;
}

/* mkdir_durable creates path (mode 0700) if missing and fsyncs its parent
 * so the new entry survives a crash. */
static int mkdir_durable(const char *path) {
  if (mkdir(path, 0700) != 0) {
    return errno == EEXIST ? 0 : -1;
  }
  char parent[4096];
  const char *slash = strrchr(path, '/');
  if (slash == NULL) {
    snprintf(parent, sizeof parent, ".");
  } else {
    snprintf(parent, sizeof parent, "%.*s",
             (int)(slash - path + (slash == path)), path);
  }
  int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return -1;
  }
  int rc = fsync(fd);
  close(fd);
  return rc;
}

static int open_seg_dir(const char *dir) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/seg", dir) >= (int)sizeof path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  if (mkdir_durable(dir) != 0 || mkdir_durable(path) != 0) {
    return -1;
  }
  return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

struct spool_writer *spool_writer_open(const char *dir, unsigned thread_index,
                                       uint64_t first_id) {
  if (thread_index >= SPOOL_MAX_THREADS) {
    errno = EINVAL;
    return NULL;
  }
  struct spool_writer *w = calloc(1, sizeof *w);
  if (w == NULL) {
    return NULL;
  }
  w->fd = -1;
  w->thread_index = thread_index;
  w->next_min_id = first_id;
  w->target_size = SPOOL_SEGMENT_TARGET_SIZE;
  w->seg_dirfd = open_seg_dir(dir);
  uint32_t max_seq = 0;
  int found = 0;
  if (w->seg_dirfd < 0 ||
      max_segment_seq(w->seg_dirfd, thread_index, &max_seq, &found) != 0) {
    goto fail;
  }
  /* writer_rotate creates w->seq + 1: the first is 1, or above the last. */
  w->seq = found ? max_seq : 0;
  if (writer_rotate(w) != 0) {
    goto fail;
  }
  return w;
fail : {
  int saved = errno;
  spool_writer_close(w);
  errno = saved;
  return NULL;
}
}

/* prezero_off unmaps the zeros; the batch that used them is written. */
static void prezero_off(struct spool_writer *w) {
  if (w->zeros != NULL) {
    munmap(w->zeros, (size_t)w->prezero_chunk);
    w->zeros = NULL;
  }
  w->prezero_chunk = 0;
}

void spool_writer_close(struct spool_writer *w) {
  if (w == NULL) {
    return;
  }
  if (w->fd >= 0) {
    if (w->zeroed_end > w->offset) {
      /* The zeros are nobody's business once we stop: best effort (a
       * scan skips a zero tail anyway, so no fsync). */
      (void)!ftruncate(w->fd, (off_t)w->offset);
    }
    close(w->fd);
  }
  if (w->seg_dirfd >= 0) {
    close(w->seg_dirfd);
  }
  prezero_off(w);
  buf_free(&w->staged_arena);
  buf_free(&w->flight_arena);
  free(w->staged.items);
  free(w->flight.items);
  free(w);
}

/* ---- staging ---- */

static int pending_reserve(struct spool_pending_list *l, size_t n) {
  if (n <= l->cap) {
    return 0;
  }
  size_t cap = l->cap ? l->cap : 64;
  while (cap < n) {
    cap *= 2;
  }
  struct spool_pending *p = realloc(l->items, cap * sizeof *p);
  if (p == NULL) {
    return -1;
  }
  l->items = p;
  l->cap = cap;
  return 0;
}

/* writer_stage records a head just appended to the staged arena at
 * head_off; on failure the arena is rolled back. */
static int writer_stage(struct spool_writer *w, size_t head_off,
                        const uint8_t *body, size_t body_len, void *cookie) {
  if (pending_reserve(&w->staged, w->staged.num + 1) != 0) {
    w->staged_arena.len = head_off;
    errno = ENOMEM;
    return -1;
  }
  w->staged.items[w->staged.num++] = (struct spool_pending){
      .cookie = cookie,
      .head_off = head_off,
      .head_len = w->staged_arena.len - head_off,
      .body = body,
      .body_len = body_len,
  };
  return 0;
}

int spool_writer_add(struct spool_writer *w, const struct spool_message *m,
                     void *cookie) {
  size_t off = w->staged_arena.len;
  size_t head_len;
  if (spool_message_encode_head(&w->staged_arena, m, &head_len) != 0) {
    return -1;
  }
  return writer_stage(w, off, m->body, m->body_len, cookie);
}

int spool_writer_add_done(struct spool_writer *w, const struct spool_done *d,
                          void *cookie) {
  size_t off = w->staged_arena.len;
  if (spool_done_encode(&w->staged_arena, d) != 0) {
    return -1;
  }
  return writer_stage(w, off, NULL, 0, cookie);
}

int spool_writer_add_hold(struct spool_writer *w, const struct spool_hold *h,
                          void *cookie) {
  size_t off = w->staged_arena.len;
  if (spool_hold_encode(&w->staged_arena, h) != 0) {
    return -1;
  }
  return writer_stage(w, off, NULL, 0, cookie);
}

int spool_writer_busy(const struct spool_writer *w) {
  return w->busy ? 1 : 0;
}

size_t spool_writer_staged(const struct spool_writer *w) {
  return w->staged.num;
}

const char *spool_writer_segment(const struct spool_writer *w) {
  return w->seg_name;
}

uint64_t spool_writer_offset(const struct spool_writer *w) {
  return w->offset;
}

void spool_writer_set_segment_target(struct spool_writer *w, uint64_t size) {
  w->target_size = size;
}

int spool_writer_set_prezero(struct spool_writer *w, uint64_t chunk) {
  assert(!w->busy);
  prezero_off(w);
  if (chunk == 0) {
    return 0;
  }
  void *z =
      mmap(NULL, (size_t)chunk, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (z == MAP_FAILED) {
    return -1;
  }
  w->zeros = z;
  w->prezero_chunk = chunk;
  return 0;
}

/* ---- batches ---- */

/* batch_count decides how many staged records fit one batch: at most
 * SPOOL_BATCH_MAX_IOV iovecs (heads of body-less records are contiguous in
 * the arena and share one iovec) and SPOOL_BATCH_MAX_BYTES unless a single
 * record is bigger. Always at least one record. */
static size_t batch_count(const struct spool_writer *w) {
  size_t num_iov = 0;
  uint64_t len = 0;
  int prev_open = 0; /* previous iovec is a head that can be extended */
  size_t k;
  for (k = 0; k < w->staged.num; k++) {
    const struct spool_pending *p = &w->staged.items[k];
    size_t need = (prev_open ? 0 : 1) + (p->body_len ? 1 : 0);
    uint64_t rec_len = p->head_len + p->body_len;
    if (k > 0 && (num_iov + need > SPOOL_BATCH_MAX_IOV ||
                  len + rec_len > SPOOL_BATCH_MAX_BYTES)) {
      break;
    }
    num_iov += need;
    len += rec_len;
    prev_open = p->body_len == 0;
  }
  return k;
}

/* batch_take moves the first k staged records into flight (the arenas
 * swap; leftovers are copied back to the staged arena). */
static int batch_take(struct spool_writer *w, size_t k) {
  struct spool_pending_list *s = &w->staged;
  if (pending_reserve(&w->flight, k) != 0) {
    return -1;
  }
  struct buf tmp = w->flight_arena; /* empty: no batch in flight */
  w->flight_arena = w->staged_arena;
  w->staged_arena = tmp;
  buf_reset(&w->staged_arena);
  if (k < s->num) {
    size_t from = s->items[k].head_off;
    if (buf_append(&w->staged_arena, w->flight_arena.data + from,
                   w->flight_arena.len - from) != 0) {
      /* Undo the swap: nothing moved. */
      tmp = w->staged_arena;
      w->staged_arena = w->flight_arena;
      w->flight_arena = tmp;
      buf_reset(&w->flight_arena);
      return -1;
    }
    w->flight_arena.len = from;
    for (size_t i = k; i < s->num; i++) {
      s->items[i].head_off -= from;
    }
  }
  memcpy(w->flight.items, s->items, k * sizeof *s->items);
  w->flight.num = k;
  memmove(s->items, s->items + k, (s->num - k) * sizeof *s->items);
  s->num -= k;
  return 0;
}

/* batch_iov builds the in-flight iovecs; returns their number. */
static int batch_iov(struct spool_writer *w, uint64_t *out_len) {
  int n = 0;
  uint64_t len = 0;
  int prev_open = 0;
  for (size_t i = 0; i < w->flight.num; i++) {
    const struct spool_pending *p = &w->flight.items[i];
    if (prev_open) { /* contiguous with the previous head */
      w->iov[n - 1].iov_len += p->head_len;
    } else {
      assert(n < SPOOL_BATCH_MAX_IOV);
      w->iov[n++] =
          (struct iovec){w->flight_arena.data + p->head_off, p->head_len};
    }
    if (p->body_len) {
      assert(n < SPOOL_BATCH_MAX_IOV);
      w->iov[n++] = (struct iovec){(void *)p->body, p->body_len};
    }
    prev_open = p->body_len == 0;
    len += p->head_len + p->body_len;
  }
  *out_len = len;
  return n;
}

int spool_writer_flush_begin(struct spool_writer *w,
                             struct spool_flush *out_flush) {
  if (w->busy || w->staged.num == 0) {
    return 0;
  }
  if ((w->need_rotate || w->offset >= w->target_size) &&
      writer_rotate(w) != 0) {
    return -1;
  }
  if (batch_take(w, batch_count(w)) != 0) {
    errno = ENOMEM;
    return -1;
  }
  int num_iov = batch_iov(w, &w->flight_len);
  /* Past the zeroed part: the same write lays zeros up to the next chunk
   * boundary, and this batch's fdatasync makes the new length durable
   * once for the chunk. Only for small batches: the zeros cost a copy and
   * a disk write per byte, the metadata sync they spare is per batch, and
   * a batch of large messages is better off just growing the file. */
  uint64_t end = w->offset + w->flight_len;
  w->flight_zeros = 0;
  if (w->prezero_chunk > 0 && end > w->zeroed_end &&
      w->flight_len <= w->prezero_chunk / SPOOL_PREZERO_BATCH_DIV) {
    uint64_t c = w->prezero_chunk;
    w->flight_zeros = (end + c - 1) / c * c - end;
    if (w->flight_zeros > 0) {
      w->iov[num_iov++] = (struct iovec){w->zeros, (size_t)w->flight_zeros};
    }
  }
  w->busy = 1;
  *out_flush = (struct spool_flush){
      .fd = w->fd,
      .offset = w->offset,
      .iov = w->iov,
      .num_iov = num_iov,
      .len = (size_t)(w->flight_len + w->flight_zeros),
  };
  return 1;
}

/* writer_truncate_back cuts the failed bytes off the segment so a restart
 * does not replay records that were never acknowledged. */
static void writer_truncate_back(struct spool_writer *w) {
  w->zeroed_end = w->offset;
  if (ftruncate(w->fd, (off_t)w->offset) == 0) {
    (void)fsync(w->fd); /* best effort: the segment is abandoned anyway */
  }
  w->need_rotate = 1;
}

void spool_writer_flush_done(struct spool_writer *w, int result,
                             void (*done)(void *cookie, int err, void *arg),
                             void *arg) {
  assert(w->busy && "flush_done without a batch in flight");
  if (result == 0) {
    uint64_t end = w->offset + w->flight_len + w->flight_zeros;
    w->zeroed_end = end > w->zeroed_end ? end : w->zeroed_end;
    w->offset += w->flight_len;
  } else {
    writer_truncate_back(w);
    if (result == -ENOSPC && w->flight_zeros > 0) {
      /* The zeros may be what did not fit: no more of them. */
      prezero_off(w);
    }
  }
  w->flight_zeros = 0;
  /* Still busy during the callbacks: one may stage a record, but the
   * flight list it would clobber is not released until they are done. */
  for (size_t i = 0; i < w->flight.num; i++) {
    if (done) {
      done(w->flight.items[i].cookie, result, arg);
    }
  }
  w->flight.num = 0;
  w->flight_len = 0;
  buf_reset(&w->flight_arena);
  w->busy = 0;
}

void spool_writer_fail_staged(struct spool_writer *w, int err,
                              void (*done)(void *cookie, int err, void *arg),
                              void *arg) {
  /* Detach the list first: a callback may stage new records. */
  struct spool_pending_list l = w->staged;
  w->staged = (struct spool_pending_list){0};
  buf_reset(&w->staged_arena);
  for (size_t i = 0; i < l.num; i++) {
    if (done) {
      done(l.items[i].cookie, err, arg);
    }
  }
  if (w->staged.items == NULL) {
    w->staged = (struct spool_pending_list){l.items, 0, l.cap};
  } else {
    free(l.items);
  }
}

/* write_all writes the whole batch with pwritev, resuming short writes.
 * Returns 0 or a negative errno (-ENOSPC if the kernel wrote nothing). */
static int write_all(const struct spool_flush *f) {
  struct iovec iov[SPOOL_BATCH_MAX_IOV + 1]; /* + the zeros */
  int n = f->num_iov;
  memcpy(iov, f->iov, (size_t)n * sizeof *iov);
  struct iovec *cur = iov;
  uint64_t off = f->offset;
  while (n > 0) {
    ssize_t k = pwritev(f->fd, cur, n, (off_t)off);
    if (k < 0 && errno == EINTR) {
      continue;
    }
    if (k <= 0) {
      return k < 0 ? -errno : -ENOSPC;
    }
    off += (uint64_t)k;
    while (n > 0 && (size_t)k >= cur->iov_len) {
      k -= (ssize_t)cur->iov_len;
      cur++;
      n--;
    }
    if (n > 0) {
      cur->iov_base = (uint8_t *)cur->iov_base + k;
      cur->iov_len -= (size_t)k;
    }
  }
  return 0;
}

int spool_writer_sync_flush(struct spool_writer *w,
                            void (*done)(void *cookie, int err, void *arg),
                            void *arg) {
  assert(!w->busy);
  for (;;) {
    struct spool_flush f;
    int r = spool_writer_flush_begin(w, &f);
    if (r <= 0) {
      return r;
    }
    int result = write_all(&f);
    if (result == 0 && fdatasync(f.fd) != 0) {
      result = -errno;
    }
    spool_writer_flush_done(w, result, done, arg);
    if (result != 0) {
      errno = -result;
      return -1;
    }
  }
}
