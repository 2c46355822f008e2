/* core/spool_lock.c — the spool's writer lock; see spool.h.
 *
 * flock, not fcntl (POSIX) locks: a POSIX lock belongs to the process and
 * is dropped when any descriptor of the file is closed (a library closing
 * its own fd would release the daemon's lock); flock belongs to the open
 * file description and lasts until its last descriptor is closed. The
 * lock file is never removed: unlinking it while another process waits
 * would let two processes hold locks on two different files. */
#include "core/spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int lock_fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int lock_fail(char *err, size_t err_len, const char *fmt, ...) {
  int saved = errno;
  if (err != NULL && err_len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  errno = saved;
  return -1;
}

int spool_lock(const char *dir, int *out_fd, char *err, size_t err_len) {
  char path[4096];
  if (snprintf(path, sizeof path, "%s/" SPOOL_LOCK_NAME, dir) >=
      (int)sizeof path) {
    errno = ENAMETOOLONG;
    return lock_fail(err, err_len, "%s: path too long", dir);
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    return lock_fail(err, err_len, "%s: %s", dir, strerror(errno));
  }
  /* O_NOFOLLOW: a symlink planted here must not make us create or lock
   * some other file. */
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return lock_fail(err, err_len, "%s: %s", path, strerror(errno));
  }
  int rc;
  do {
    rc = flock(fd, LOCK_EX | LOCK_NB);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    int saved = errno;
    close(fd);
    errno = saved;
    if (saved == EWOULDBLOCK) {
      lock_fail(err, err_len, "%s: locked by another process", path);
      return 1;
    }
    return lock_fail(err, err_len, "%s: flock: %s", path, strerror(saved));
  }
  *out_fd = fd;
  return 0;
}
