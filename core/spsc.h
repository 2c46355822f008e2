/* core/spsc.h — a bounded lock-free ring of pointers between exactly one
 * producer thread and one consumer thread.
 *
 * Owns: the slot array (capacity pointers), not what the pointers point to:
 * a pointer pushed belongs to the consumer once spsc_pop_batch returned it.
 *
 * Threads: spsc_push on the producer's thread only, spsc_pop_batch on the
 * consumer's thread only; spsc_init and spsc_cleanup while neither runs.
 * Either role may pass to another thread if the hand-over itself orders
 * memory (a mutex, thread creation or join): a stopped consumer's role may
 * be taken by the producer, for instance, to take back what it left.
 * spsc_size may be called from either side and is exact there (elsewhere
 * a snapshot).
 *
 * Memory order: a push publishes the pointer with a release store of the
 * tail, a pop reads it after an acquire load of the tail, so whatever the
 * producer wrote before the push is visible to the consumer after the pop
 * (and the slot's reuse is ordered the same way through the head). The
 * head and the tail sit on cache lines of their own, each side beside its
 * cached copy of the other's index, so the two threads do not share a line
 * while the ring is neither empty nor full.
 *
 * Limits: the capacity is a power of two from 2 to SPSC_MAX_CAPACITY. The
 * indices are free-running size_t counters (wrap-around is harmless: only
 * differences are used). */
#ifndef POSTSEAL_CORE_SPSC_H
#define POSTSEAL_CORE_SPSC_H

#include <stdatomic.h>
#include <stddef.h>

#define SPSC_MAX_CAPACITY ((size_t)1 << 24)
#define SPSC_CACHE_LINE 64

struct spsc {
  /* Producer's line: where the next push goes, and the head as last seen. */
  _Alignas(SPSC_CACHE_LINE) _Atomic size_t tail;
  size_t head_seen;
  /* Consumer's line: where the next pop comes from, and the tail as seen. */
  _Alignas(SPSC_CACHE_LINE) _Atomic size_t head;
  size_t tail_seen;
  /* Read-only after init: shared by both without contention. */
  _Alignas(SPSC_CACHE_LINE) size_t mask;
  void **slots;
};

/* spsc_init makes an empty ring of `capacity` slots. Returns 0, or -1 with
 * errno EINVAL (not a power of two in range) or ENOMEM. */
int spsc_init(struct spsc *q, size_t capacity);
/* spsc_cleanup frees the slots; pointers still queued are dropped (their
 * owner must have drained the ring first if they matter). */
void spsc_cleanup(struct spsc *q);

/* spsc_push appends p. Producer only. Returns 1, or 0 if the ring is full
 * (nothing changed: the caller keeps p). */
int spsc_push(struct spsc *q, void *p);
/* spsc_pop_batch moves up to `max` pointers, oldest first, into out.
 * Consumer only. Returns how many (0: empty). */
size_t spsc_pop_batch(struct spsc *q, void **out, size_t max);
/* spsc_size: pointers queued (see Threads for how exact). */
size_t spsc_size(const struct spsc *q);
/* spsc_capacity: the slots, as given to spsc_init. */
size_t spsc_capacity(const struct spsc *q);

#endif
