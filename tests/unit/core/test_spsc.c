/* tests/unit/core/test_spsc.c — the single-producer single-consumer ring:
 * capacities, full and empty, wrap-around, batches, and two threads
 * passing a million items in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>

#include "core/spsc.h"

#define STRESS_ITEMS 1000000u

/* item: a distinct non-NULL pointer value for a sequence number. */
static void *item(size_t i) {
  return (void *)(uintptr_t)(i + 1);
}

struct init_case {
  const char *label;
  size_t capacity;
  int want_rc;
};

static void test_init(void **state) {
  static const struct init_case cases[] = {
      {"zero", 0, -1},
      {"one", 1, -1},
      {"two", 2, 0},
      {"not a power of two", 6, -1},
      {"power of two", 1024, 0},
      {"largest", SPSC_MAX_CAPACITY, 0},
      {"above the largest", SPSC_MAX_CAPACITY * 2, -1},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct init_case *tc = &cases[i];
    struct spsc q;
    errno = 0;
    int rc = spsc_init(&q, tc->capacity);
    if (rc != tc->want_rc) {
      fail_msg("%s: got rc %d, want %d", tc->label, rc, tc->want_rc);
    }
    if (rc == 0) {
      if (spsc_capacity(&q) != tc->capacity || spsc_size(&q) != 0) {
        fail_msg("%s: got capacity %zu size %zu, want %zu and 0", tc->label,
                 spsc_capacity(&q), spsc_size(&q), tc->capacity);
      }
      spsc_cleanup(&q);
    } else if (errno != EINVAL) {
      fail_msg("%s: got errno %d, want EINVAL", tc->label, errno);
    }
  }
}

/* A script of pushes and pops on one ring of capacity 4, run from one
 * thread: the indices wrap several times. */
struct step {
  const char *label;
  int push; /* 1: push `count` items; 0: pop up to `count` */
  size_t count;
  size_t want;      /* pushes accepted, or items popped */
  size_t want_size; /* afterwards */
};

static void test_script(void **state) {
  static const struct step steps[] = {
      {"pop from empty", 0, 4, 0, 0},
      {"fill", 1, 4, 4, 4},
      {"push into full", 1, 1, 0, 4},
      {"pop a batch of 3", 0, 3, 3, 1},
      {"refill across the end", 1, 5, 3, 4},
      {"pop more than there are", 0, 10, 4, 0},
      {"pop from empty again", 0, 1, 0, 0},
      {"one in", 1, 1, 1, 1},
      {"one out", 0, 1, 1, 0},
      {"fill after wrapping", 1, 4, 4, 4},
      {"drain", 0, 4, 4, 0},
  };
  struct spsc q;
  assert_int_equal(spsc_init(&q, 4), 0);
  size_t next_push = 0, next_pop = 0;
  for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
    const struct step *tc = &steps[i];
    size_t got = 0;
    if (tc->push) {
      for (size_t k = 0; k < tc->count; k++) {
        if (spsc_push(&q, item(next_push)) == 1) {
          next_push++;
          got++;
        }
      }
    } else {
      void *out[16];
      got = spsc_pop_batch(&q, out, tc->count);
      for (size_t k = 0; k < got; k++) {
        if (out[k] != item(next_pop)) {
          fail_msg("%s: item %zu: got %p, want %p", tc->label, k, out[k],
                   item(next_pop));
        }
        next_pop++;
      }
    }
    if (got != tc->want || spsc_size(&q) != tc->want_size) {
      fail_msg("%s: got %zu (size %zu), want %zu (size %zu)", tc->label, got,
               spsc_size(&q), tc->want, tc->want_size);
    }
  }
  spsc_cleanup(&q);
}

struct stress {
  struct spsc q;
  size_t items;
  size_t full_seen; /* pushes refused: the ring was full */
};

static void *stress_producer(void *arg) {
  struct stress *s = arg;
  for (size_t i = 0; i < s->items; i++) {
    while (spsc_push(&s->q, item(i)) == 0) {
      s->full_seen++;
      sched_yield();
    }
  }
  return NULL;
}

/* Two threads, one ring of 64 (small, so it is full and empty often): every
 * item arrives once, in order, and batches of every size occur. */
static void test_two_threads(void **state) {
  struct stress s = {.items = STRESS_ITEMS};
  assert_int_equal(spsc_init(&s.q, 64), 0);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, stress_producer, &s), 0);
  size_t next = 0, empty = 0, batches = 0;
  void *out[48];
  while (next < s.items) {
    size_t n = spsc_pop_batch(&s.q, out, sizeof(out) / sizeof(out[0]));
    if (n == 0) {
      empty++;
      sched_yield();
      continue;
    }
    batches++;
    for (size_t k = 0; k < n; k++, next++) {
      if (out[k] != item(next)) {
        fail_msg("item %zu: got %p, want %p", next, out[k], item(next));
      }
    }
  }
  assert_int_equal(pthread_join(t, NULL), 0);
  void *extra;
  if (spsc_pop_batch(&s.q, &extra, 1) != 0 || spsc_size(&s.q) != 0) {
    fail_msg("got items beyond the %zu pushed", s.items);
  }
  print_message("stress: %zu items in %zu batches; %zu empty polls, %zu "
                "full pushes\n",
                s.items, batches, empty, s.full_seen);
  spsc_cleanup(&s.q);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init),
      cmocka_unit_test(test_script),
      cmocka_unit_test(test_two_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
