/* core/bufring.c — provided-buffer ring; see bufring.h. */
#include "core/bufring.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

int bufring_init(struct bufring *b, struct io_uring *ring, unsigned count,
                 size_t size, unsigned short bgid) {
  memset(b, 0, sizeof(*b));
  if (count == 0 || count > 32768 || (count & (count - 1)) != 0 || size == 0) {
    return -EINVAL;
  }
  size_t ring_size = count * sizeof(struct io_uring_buf);
  void *mem = mmap(NULL, ring_size, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
  if (mem == MAP_FAILED) {
    return -errno;
  }
  b->br = mem;
  b->count = count;
  b->size = size;
  b->bgid = bgid;
  b->bufs = malloc((size_t)count * size);
  if (b->bufs == NULL) {
    bufring_free(b, NULL);
    return -ENOMEM;
  }
  io_uring_buf_ring_init(b->br);
  struct io_uring_buf_reg reg = {
      .ring_addr = (uint64_t)(uintptr_t)mem,
      .ring_entries = count,
      .bgid = bgid,
  };
  int rc = io_uring_register_buf_ring(ring, &reg, 0);
  if (rc != 0) {
    bufring_free(b, NULL);
    return rc;
  }
  int mask = io_uring_buf_ring_mask(count);
  for (unsigned i = 0; i < count; i++) {
    io_uring_buf_ring_add(b->br, b->bufs + (size_t)i * size, (unsigned)size,
                          (unsigned short)i, mask, (int)i);
  }
  io_uring_buf_ring_advance(b->br, (int)count);
  return 0;
}

const uint8_t *bufring_data(const struct bufring *b, unsigned bid) {
  return b->bufs + (size_t)bid * b->size;
}

void bufring_return(struct bufring *b, unsigned bid) {
  io_uring_buf_ring_add(b->br, b->bufs + (size_t)bid * b->size,
                        (unsigned)b->size, (unsigned short)bid,
                        io_uring_buf_ring_mask(b->count), 0);
  io_uring_buf_ring_advance(b->br, 1);
}

void bufring_free(struct bufring *b, struct io_uring *ring) {
  if (ring != NULL && b->br != NULL) {
    io_uring_unregister_buf_ring(ring, b->bgid);
  }
  if (b->br != NULL) {
    munmap(b->br, b->count * sizeof(struct io_uring_buf));
  }
  free(b->bufs);
  memset(b, 0, sizeof(*b));
}
