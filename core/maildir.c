/* core/maildir.c — Maildir delivery; see maildir.h.
 *
 * The root and its tmp/ and new/ are opened once per delivery and used by
 * descriptor (openat, renameat), so the path is resolved once and a long
 * root path costs nothing per file. Directories are created only when
 * opening them says ENOENT, and each creation is followed by an fsync of
 * its parent, so a Maildir that exists costs three opens and no mkdir. */
#include "core/maildir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/fdio.h"

#define MAILDIR_WRITE_CHUNK (64u << 10) /* octets per write() */

static atomic_ulong maildir_seq;      /* the Q<n> of names */
static atomic_int maildir_fault_step; /* enum maildir_fault armed, or 0 */
static atomic_int maildir_fault_err;

/* ---- errors -------------------------------------------------------------- */

static void maildir_err(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void maildir_err(char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0) {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, err_len, fmt, ap);
  va_end(ap);
}

/* The class of a failed system call's errno: what retrying cannot mend is
 * permanent (a path that is not a directory or is too long, no right to
 * it); the rest (full disk, quota, I/O, memory, descriptors) is temporary. */
static int maildir_errno_class(int e) {
  switch (e) {
  case ENOTDIR:
  case ENAMETOOLONG:
  case EACCES:
  case EPERM:
  case ELOOP:
  case EISDIR:
  case EINVAL:
    return MAILDIR_PERMANENT;
  default:
    return MAILDIR_TEMPORARY;
  }
}

/* Reports a failed call (errno e) on what/path; returns its class. */
static int maildir_sys_err(char *err, size_t err_len, int e, const char *what,
                           const char *path) {
  char buf[128];
  const char *s = strerror_r(e, buf, sizeof(buf)); /* GNU: may not use buf */
  maildir_err(err, err_len, "%s %s: %s", what, path, s);
  return maildir_errno_class(e);
}

void maildir_fault_set(enum maildir_fault step, int err) {
  atomic_store(&maildir_fault_err, err);
  atomic_store(&maildir_fault_step, err != 0 ? (int)step : 0);
}

/* 1 (with errno set) if a test armed a failure of this step; disarms it. */
static int maildir_fault(enum maildir_fault step) {
  int want = (int)step;
  if (atomic_load(&maildir_fault_step) != want ||
      !atomic_compare_exchange_strong(&maildir_fault_step, &want, 0)) {
    return 0;
  }
  errno = atomic_load(&maildir_fault_err);
  return 1;
}

/* ---- path templates ------------------------------------------------------ */

/* 1 if the n octets at p may stand in a path in place of %u or %d: not
 * empty, no '/', no control octet, no leading '.', no "..". Else 0 with
 * the reason. */
static int maildir_part_ok(const char *p, size_t n, const char *what, char *err,
                           size_t err_len) {
  if (n == 0) {
    maildir_err(err, err_len, "empty %s", what);
    return 0;
  }
  if (p[0] == '.') {
    maildir_err(err, err_len, "%s starts with a dot", what);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)p[i];
    if (ch < 0x20 || ch == 0x7f) {
      maildir_err(err, err_len, "control character in %s", what);
      return 0;
    }
    if (ch == '/') {
      maildir_err(err, err_len, "'/' in %s", what);
      return 0;
    }
    if (ch == '.' && i + 1 < n && p[i + 1] == '.') {
      maildir_err(err, err_len, "\"..\" in %s", what);
      return 0;
    }
  }
  return 1;
}

/* A bounded writer into the caller's buffer; sticky overflow. */
struct maildir_out {
  char *p;
  size_t cap, len;
  int overflow;
};

static void maildir_out_put(struct maildir_out *o, const char *s, size_t n) {
  if (o->overflow || n >= o->cap - o->len) {
    o->overflow = 1; /* room is kept for the NUL */
    return;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
  o->p[o->len] = '\0';
}

int maildir_path_expand(const char *tmpl, const char *rcpt_addr, char *out,
                        size_t out_len, char *err, size_t err_len) {
  if (out == NULL || out_len == 0) {
    maildir_err(err, err_len, "no room for the path");
    return -1;
  }
  out[0] = '\0';
  const char *at = strrchr(rcpt_addr, '@');
  size_t local_len = at ? (size_t)(at - rcpt_addr) : strlen(rcpt_addr);
  const char *dom = at ? at + 1 : "";
  size_t dom_len = strlen(dom);
  if (local_len > MAILDIR_MAX_LOCAL || dom_len > MAILDIR_MAX_DOMAIN) {
    maildir_err(err, err_len, "%s too long",
                local_len > MAILDIR_MAX_LOCAL ? "local part" : "domain");
    return -1;
  }
  char lower[MAILDIR_MAX_DOMAIN + 1];
  for (size_t i = 0; i <= dom_len; i++) {
    char ch = dom[i]; /* ASCII only: a UTF-8 domain keeps its octets */
    lower[i] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
  }
  struct maildir_out o = {.p = out, .cap = out_len};
  for (const char *t = tmpl; *t != '\0'; t++) {
    if (*t != '%') {
      maildir_out_put(&o, t, 1);
      continue;
    }
    t++;
    if (*t == '%') {
      maildir_out_put(&o, "%", 1);
    } else if (*t == 'u') {
      if (!maildir_part_ok(rcpt_addr, local_len, "local part", err, err_len)) {
        out[0] = '\0';
        return -1;
      }
      maildir_out_put(&o, rcpt_addr, local_len);
    } else if (*t == 'd') {
      if (!maildir_part_ok(lower, dom_len, "domain", err, err_len)) {
        out[0] = '\0';
        return -1;
      }
      maildir_out_put(&o, lower, dom_len);
    } else {
      maildir_err(err, err_len, "unknown %%-sequence in template \"%s\"", tmpl);
      out[0] = '\0';
      return -1;
    }
  }
  if (o.overflow) {
    maildir_err(err, err_len, "expanded path longer than %zu octets",
                out_len - 1);
    out[0] = '\0';
    return -1;
  }
  return 0;
}

/* ---- directories --------------------------------------------------------- */

/* Creates path's missing directories (0700), parents first, fsyncing each
 * new one's parent so the creation survives a crash. */
static int maildir_mkdir_p(const char *path, char *err, size_t err_len) {
  char buf[PATH_MAX];
  size_t n = strlen(path);
  if (n >= sizeof(buf)) {
    return maildir_sys_err(err, err_len, ENAMETOOLONG, "mkdir", path);
  }
  memcpy(buf, path, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != '\0') {
      continue;
    }
    if (buf[i - 1] == '/') {
      continue; /* "a//b" */
    }
    char saved = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0700) == 0) {
      /* the parent now names it: make that durable */
      char *slash = strrchr(buf, '/');
      const char *parent = slash == NULL ? "." : slash == buf ? "/" : buf;
      if (slash != NULL && slash != buf) {
        *slash = '\0';
      }
      int fd = open(parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      int rc = fd >= 0 ? fsync(fd) : -1;
      int e = errno;
      if (fd >= 0) {
        close(fd);
      }
      if (slash != NULL && slash != buf) {
        *slash = '/';
      }
      if (rc != 0) {
        return maildir_sys_err(err, err_len, e, "fsync parent of", buf);
      }
    } else if (errno != EEXIST) {
      return maildir_sys_err(err, err_len, errno, "mkdir", buf);
    }
    buf[i] = saved;
  }
  return 0;
}

/* Opens the Maildir root, creating it (and parents) if missing. Returns a
 * descriptor or a negative class. */
static int maildir_open_root(const char *dir, char *err, size_t err_len) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    int rc = maildir_mkdir_p(dir, err, err_len);
    if (rc != 0) {
      return rc;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  if (fd < 0) {
    return maildir_sys_err(err, err_len, errno, "open", dir);
  }
  return fd;
}

/* Opens root/name, creating it if missing (then *created = 1). Returns a
 * descriptor or a negative class. */
static int maildir_open_sub(int root, const char *dir, const char *name,
                            int *created, char *err, size_t err_len) {
  int fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    if (mkdirat(root, name, 0700) == 0) {
      *created = 1;
    } else if (errno != EEXIST) { /* EEXIST: another delivery made it */
      int e = errno;
      char path[PATH_MAX];
      snprintf(path, sizeof(path), "%s/%s", dir, name);
      return maildir_sys_err(err, err_len, e, "mkdir", path);
    }
    fd = openat(root, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  }
  if (fd < 0) {
    int e = errno;
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return maildir_sys_err(err, err_len, e, "open", path);
  }
  return fd;
}

/* The three subdirectories: tmp/ and new/ stay open, cur/ need only be
 * there (a reader moves seen messages into it). */
static int maildir_open_subs(int root, const char *dir, int *out_tmp,
                             int *out_new, char *err, size_t err_len) {
  int created = 0;
  int tmp = maildir_open_sub(root, dir, "tmp", &created, err, err_len);
  if (tmp < 0) {
    return tmp;
  }
  int nw = maildir_open_sub(root, dir, "new", &created, err, err_len);
  if (nw < 0) {
    close(tmp);
    return nw;
  }
  int cur = maildir_open_sub(root, dir, "cur", &created, err, err_len);
  if (cur < 0) {
    close(tmp);
    close(nw);
    return cur;
  }
  close(cur);
  if (created && fsync(root) != 0) {
    int e = errno;
    close(tmp);
    close(nw);
    return maildir_sys_err(err, err_len, e, "fsync", dir);
  }
  *out_tmp = tmp;
  *out_new = nw;
  return 0;
}

/* ---- the file ------------------------------------------------------------ */

/* 1 if s may go into a header line: no control octet (CR, LF...). */
static int maildir_header_ok(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      return 0;
    }
  }
  return 1;
}

/* The file's size: the header lines, and the body with CRLF made LF. */
static size_t maildir_file_size(const struct maildir_delivery *d,
                                size_t hdr_len) {
  size_t n = hdr_len + d->body_len;
  for (size_t i = 0; i + 1 < d->body_len; i++) {
    n -= d->body[i] == '\r' && d->body[i + 1] == '\n';
  }
  return n;
}

/* host for a name: '/', ':' (the Maildir spec), ',' (ends the name's
 * fields), '\' and non-printables as \ooo. */
static void maildir_host(char *out, size_t cap, const char *host) {
  struct maildir_out o = {.p = out, .cap = cap};
  out[0] = '\0';
  if (host == NULL || host[0] == '\0') {
    host = "localhost";
  }
  for (const unsigned char *p = (const unsigned char *)host; *p != '\0'; p++) {
    if (*p <= ' ' || *p >= 0x7f || *p == '/' || *p == ':' || *p == ',' ||
        *p == '\\') {
      char esc[8];
      snprintf(esc, sizeof(esc), "\\%03o", *p);
      maildir_out_put(&o, esc, 4);
    } else {
      maildir_out_put(&o, (const char *)p, 1);
    }
  }
}

/* <sec>.M<usec>P<pid>Q<n>R<random>.<host>,S=<size>. Returns 0, or -1 if it
 * does not fit (a hostname of hundreds of octets). */
static int maildir_name(char *out, size_t cap, const char *host, size_t size) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  unsigned long q = atomic_fetch_add(&maildir_seq, 1) + 1;
  uint64_t rnd = 0;
  if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd)) {
    /* No entropy yet (early boot): P, Q and M keep the name unique. */
    rnd = ((uint64_t)ts.tv_nsec << 20) ^ q;
  }
  char h[MAILDIR_NAME_MAX];
  maildir_host(h, sizeof(h), host);
  int n = snprintf(out, cap, "%lld.M%ldP%ldQ%luR%016llx.%s,S=%zu",
                   (long long)ts.tv_sec, ts.tv_nsec / 1000, (long)getpid(), q,
                   (unsigned long long)rnd, h, size);
  return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* write() all of p (fd_write_all), or the injected fault. 0 or -1 with
 * errno. */
static int maildir_write_all(int fd, const uint8_t *p, size_t n) {
  if (maildir_fault(MAILDIR_FAULT_WRITE)) {
    return -1;
  }
  return fd_write_all(fd, p, n);
}

/* Writes the header lines, then the body with each CRLF made LF, through
 * a buffer of MAILDIR_WRITE_CHUNK. 0 or -1 with errno. */
static int maildir_write_message(int fd, const struct maildir_delivery *d,
                                 const char *hdr, size_t hdr_len) {
  uint8_t *buf = malloc(MAILDIR_WRITE_CHUNK);
  if (buf == NULL) {
    errno = ENOMEM;
    return -1;
  }
  int rc = maildir_write_all(fd, (const uint8_t *)hdr, hdr_len);
  size_t used = 0;
  for (size_t i = 0; rc == 0 && i < d->body_len; i++) {
    if (d->body[i] == '\r' && i + 1 < d->body_len && d->body[i + 1] == '\n') {
      continue; /* the LF that follows is kept */
    }
    buf[used++] = d->body[i];
    if (used == MAILDIR_WRITE_CHUNK) {
      rc = maildir_write_all(fd, buf, used);
      used = 0;
    }
  }
  if (rc == 0 && used > 0) {
    rc = maildir_write_all(fd, buf, used);
  }
  int e = errno;
  free(buf);
  errno = e;
  return rc;
}

/* Creates tmp/name, writes and fsyncs it. 0 or a negative class; on
 * failure tmp/name is gone. */
static int maildir_write_tmp(int tmp, const char *dir, const char *name,
                             const struct maildir_delivery *d, const char *hdr,
                             size_t hdr_len, char *err, size_t err_len) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/tmp/%s", dir, name);
  int fd =
      maildir_fault(MAILDIR_FAULT_OPEN)
          ? -1
          : openat(tmp, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    /* EEXIST (temporary): a clash of unique names is a fluke, the retry
     * gets another name. */
    return maildir_sys_err(err, err_len, errno, "create", path);
  }
  const char *what = "write";
  int rc = maildir_write_message(fd, d, hdr, hdr_len);
  if (rc == 0) {
    what = "fsync";
    rc = maildir_fault(MAILDIR_FAULT_FSYNC) ? -1 : fsync(fd);
  }
  int e = errno;
  if (close(fd) != 0 && rc == 0) { /* NFS reports write errors here */
    what = "close";
    rc = -1;
    e = errno;
  }
  if (rc != 0) {
    (void)unlinkat(tmp, name, 0);
    /* Whatever the call said, a failed write or fsync of a file just
     * created is no reason to bounce: disk full, quota, I/O. */
    maildir_sys_err(err, err_len, e, what, path);
    return MAILDIR_TEMPORARY;
  }
  return 0;
}

/* tmp/name to new/name, then new/ made durable. 0 or a negative class; on
 * failure neither file is left. */
static int maildir_commit(int tmp, int nw, const char *dir, const char *name,
                          char *err, size_t err_len) {
  char path[PATH_MAX];
  if (maildir_fault(MAILDIR_FAULT_RENAME) ||
      renameat(tmp, name, nw, name) != 0) {
    int e = errno;
    (void)unlinkat(tmp, name, 0);
    snprintf(path, sizeof(path), "%s/new/%s", dir, name);
    return maildir_sys_err(err, err_len, e, "rename to", path);
  }
  if (maildir_fault(MAILDIR_FAULT_FSYNC_DIR) || fsync(nw) != 0) {
    /* Not durable, so not delivered: take it back, the retry delivers it
     * again (a reader that already moved it to cur/ gets a duplicate). */
    int e = errno;
    (void)unlinkat(nw, name, 0);
    snprintf(path, sizeof(path), "%s/new", dir);
    maildir_sys_err(err, err_len, e, "fsync", path);
    return MAILDIR_TEMPORARY;
  }
  return 0;
}

/* The checks before any file is touched. 0 or MAILDIR_PERMANENT. */
static int maildir_delivery_ok(const struct maildir_delivery *d, char *err,
                               size_t err_len) {
  if (d->dir == NULL || d->dir[0] == '\0') {
    maildir_err(err, err_len, "no Maildir path");
    return MAILDIR_PERMANENT;
  }
  if (d->return_path == NULL || d->delivered_to == NULL ||
      !maildir_header_ok(d->return_path) ||
      !maildir_header_ok(d->delivered_to) || d->delivered_to[0] == '\0') {
    maildir_err(err, err_len,
                "bad envelope for %s: missing, empty or with a "
                "control character",
                d->dir);
    return MAILDIR_PERMANENT;
  }
  if (d->body == NULL && d->body_len > 0) {
    maildir_err(err, err_len, "no body");
    return MAILDIR_PERMANENT;
  }
  return 0;
}

int maildir_deliver(const struct maildir_delivery *d, char *out_name,
                    size_t out_len, char *err, size_t err_len) {
  int rc = maildir_delivery_ok(d, err, err_len);
  if (rc != 0) {
    return rc;
  }
  char *hdr = NULL;
  int hdr_n = asprintf(&hdr, "Return-Path: <%s>\nDelivered-To: %s\n",
                       d->return_path, d->delivered_to);
  if (hdr_n < 0) {
    maildir_err(err, err_len, "out of memory");
    return MAILDIR_TEMPORARY;
  }
  char name[MAILDIR_NAME_MAX];
  if (maildir_name(name, sizeof(name), d->hostname,
                   maildir_file_size(d, (size_t)hdr_n)) != 0) {
    free(hdr);
    return maildir_sys_err(err, err_len, ENAMETOOLONG, "name for host",
                           d->hostname);
  }
  if (out_name != NULL && out_len <= strlen(name)) {
    free(hdr);
    maildir_err(err, err_len, "out_name holds %zu octets, the name needs %zu",
                out_len, strlen(name) + 1);
    return MAILDIR_PERMANENT;
  }
  int root = maildir_open_root(d->dir, err, err_len);
  int tmp = -1, nw = -1;
  rc = root < 0 ? root
                : maildir_open_subs(root, d->dir, &tmp, &nw, err, err_len);
  if (rc == 0) {
    rc = maildir_write_tmp(tmp, d->dir, name, d, hdr, (size_t)hdr_n, err,
                           err_len);
  }
  if (rc == 0) {
    rc = maildir_commit(tmp, nw, d->dir, name, err, err_len);
  }
  if (rc == 0 && out_name != NULL) {
    memcpy(out_name, name, strlen(name) + 1);
  }
  free(hdr);
  if (nw >= 0) {
    close(nw);
  }
  if (tmp >= 0) {
    close(tmp);
  }
  if (root >= 0) {
    close(root);
  }
  return rc;
}
