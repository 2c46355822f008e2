/* core/bufring.h — an io_uring provided-buffer ring: the pool multishot
 * recv draws its buffers from.
 *
 * Owns: `count` buffers of `size` bytes and the ring that hands them to the
 * kernel under buffer group `bgid`. The thread that owns the io_uring owns
 * this too. A completion names its buffer by id (cqe->flags >>
 * IORING_CQE_BUFFER_SHIFT); the data stays valid until bufring_return()
 * gives that buffer back. Used by the daemon's workers and by
 * postseal-bench. */
#ifndef POSTSEAL_CORE_BUFRING_H
#define POSTSEAL_CORE_BUFRING_H

#include <liburing.h>
#include <stddef.h>
#include <stdint.h>

struct bufring {
  struct io_uring_buf_ring *br;
  uint8_t *bufs;
  unsigned count; /* a power of two, at most 32768 */
  size_t size;
  unsigned short bgid;
};

/* bufring_init maps and registers the ring and hands every buffer to the
 * kernel. Returns 0 or a negative errno (b is then freed again). */
int bufring_init(struct bufring *b, struct io_uring *ring, unsigned count,
                 size_t size, unsigned short bgid);
/* bufring_data: the bytes of buffer `bid`. */
const uint8_t *bufring_data(const struct bufring *b, unsigned bid);
/* bufring_return gives buffer `bid` back to the kernel. */
void bufring_return(struct bufring *b, unsigned bid);
/* bufring_free unregisters (if `ring` is not NULL) and releases. */
void bufring_free(struct bufring *b, struct io_uring *ring);

#endif
