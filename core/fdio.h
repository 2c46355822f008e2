/* core/fdio.h — whole writes to a file descriptor. */
#ifndef POSTSEAL_CORE_FDIO_H
#define POSTSEAL_CORE_FDIO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

/* fd_write_all writes all n bytes of p with write(2), resuming short
 * writes and EINTR. Returns 0, or -1 with errno (EIO if write returned 0). */
static inline int fd_write_all(int fd, const void *p, size_t n) {
  const uint8_t *b = p;
  while (n > 0) {
    ssize_t k = write(fd, b, n);
    if (k < 0) {
      if (errno == EINTR) {
        continue;
      }
      return -1;
    }
    if (k == 0) {
      errno = EIO;
      return -1;
    }
    b += k;
    n -= (size_t)k;
  }
  return 0;
}

#endif
