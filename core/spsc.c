/* core/spsc.c — the single-producer single-consumer ring (see spsc.h). */
#include "core/spsc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int spsc_init(struct spsc *q, size_t capacity) {
  memset(q, 0, sizeof(*q));
  if (capacity < 2 || capacity > SPSC_MAX_CAPACITY ||
      (capacity & (capacity - 1)) != 0) {
    errno = EINVAL;
    return -1;
  }
  q->slots = calloc(capacity, sizeof(*q->slots));
  if (q->slots == NULL) {
    errno = ENOMEM;
    return -1;
  }
  q->mask = capacity - 1;
  atomic_init(&q->head, 0);
  atomic_init(&q->tail, 0);
  return 0;
}

void spsc_cleanup(struct spsc *q) {
  free(q->slots);
  q->slots = NULL;
}

int spsc_push(struct spsc *q, void *p) {
  size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
  if (tail - q->head_seen > q->mask) {
    /* Full as last seen: look again. Acquire: the consumer is done with
     * the slot before we overwrite it. */
    q->head_seen = atomic_load_explicit(&q->head, memory_order_acquire);
    if (tail - q->head_seen > q->mask) {
      return 0;
    }
  }
  q->slots[tail & q->mask] = p;
  atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
  return 1;
}

size_t spsc_pop_batch(struct spsc *q, void **out, size_t max) {
  size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
  size_t n = q->tail_seen - head;
  if (n < max) {
    /* The cached tail may be behind: look again. */
    q->tail_seen = atomic_load_explicit(&q->tail, memory_order_acquire);
    n = q->tail_seen - head;
  }
  if (n > max) {
    n = max;
  }
  for (size_t i = 0; i < n; i++) {
    out[i] = q->slots[(head + i) & q->mask];
  }
  if (n > 0) {
    /* Release: our reads of the slots happen before the producer reuses
     * them. */
    atomic_store_explicit(&q->head, head + n, memory_order_release);
  }
  return n;
}

size_t spsc_size(const struct spsc *q) {
  size_t head = atomic_load_explicit(&q->head, memory_order_acquire);
  size_t tail = atomic_load_explicit(&q->tail, memory_order_acquire);
  return tail - head;
}

size_t spsc_capacity(const struct spsc *q) {
  return q->mask + 1;
}
