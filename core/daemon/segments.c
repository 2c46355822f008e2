/* core/daemon/segments.c — spool segments deleted while the daemon runs
 * as soon as nothing in them is needed: this run's segments, per worker,
 * and the segments earlier runs left (start-up repair kept them because a
 * message in them was not finished), shared by every worker. Start-up
 * repair reclaims whatever is left (see core/spool.h).
 *
 * This run's segments. Every record in a segment this worker created
 * belongs to a message this worker owns (it commits its messages, and
 * writes the DONE and HOLD records of the messages it owns). A segment S
 * may go when:
 *   - the writer has moved on (S is not the current segment);
 *   - every message whose MESSAGE record is in S is finished (open == 0);
 *   - every segment holding the MESSAGE of a message with a DONE or HOLD
 *     record in S is gone already (live_deps == 0, and every old group in
 *     old_deps is gone): deleting S first would lose those records, and
 *     the message would be delivered again after a restart;
 *   - S is not pinned (a record that failed to be written, or bookkeeping
 *     that ran out of memory: start-up repair decides).
 * A deleted segment's dependents are re-examined; the segment directory
 * is made durable before a dependent goes, so a crash never leaves the
 * DONE records deleted and their MESSAGE in place.
 *
 * Old segments. The scan at start-up groups the segments it keeps as it
 * reclaims them (struct spool_scan_segment): a group holds every MESSAGE,
 * DONE and HOLD record of its queue ids. Each recovered message counts in
 * its group's `open` until it is finished, i.e. until every DONE that
 * finishes it is durable (fsync'd); its worker may be any worker, so the
 * counts are atomic. A group goes when its count falls to 0, unless it
 * holds the newest segment of a thread that has no writer in this run
 * (the sequence high-water mark, spool.h) or a file that is not a segment
 * of ours (keep), or a record of it failed (pinned). The worker that
 * finds it so deletes it on its own thread: the segments holding MESSAGE
 * records first, a directory fsync, then the rest and a directory fsync,
 * and only then marks the group gone; this run's segments holding DONEs
 * of its messages (old_deps) wait for that. As at start-up, a crash in
 * the middle of deleting a group whose segments hold DONEs for each
 * other's messages may deliver those recipients again (at least once,
 * never lost). Other workers notice a group gone at their next tick
 * (segs_tick: the generation moved) and re-examine their segments.
 *
 * Thread: this run's segments: the owning worker's only. Old segments:
 * built on the main thread before the workers run (segs_old_message),
 * then shared through atomics; the table is freed by the last worker in
 * segs_free. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/daemon/daemon.h"
#include "core/log.h"

struct seg {
  struct seg *next; /* the worker's live segments */
  char name[SPOOL_SEGMENT_NAME_MAX];
  unsigned open;      /* messages with their MESSAGE here, not finished */
  unsigned live_deps; /* live segments this one depends on */
  int pinned;
  int current;
  struct seg **dependents; /* segments that depend on this one */
  size_t num_dependents, cap_dependents;
  struct seg_group **old_deps; /* old groups this one waits for */
  size_t num_old_deps, cap_old_deps;
};

enum seg_group_state { GROUP_LIVE, GROUP_DELETING, GROUP_GONE };

/* A reclamation group of old segments (see the top). */
struct seg_group {
  unsigned open; /* atomic: recovered messages here not yet finished */
  int pinned;    /* atomic: stays until the next start */
  int state;     /* atomic: enum seg_group_state */
  int keep;      /* set at build: never while running */
};

struct seg_old {
  char name[SPOOL_SEGMENT_NAME_MAX];
  int has_message;
  struct seg_group *group;
};

/* Every old segment (sorted by name) and group; one table per process. */
struct segs_old {
  struct seg_old *segs;
  size_t num_segs;
  struct seg_group *groups;
  size_t num_groups;
  unsigned gen;  /* atomic: bumped each time a group is gone */
  unsigned refs; /* atomic: workers that have not yet run segs_free */
};

static struct segs_old *segs_old; /* set before the workers run */

struct seg *segs_get(struct worker *w, const char *name) {
  for (struct seg *s = w->segs; s != NULL; s = s->next) {
    if (strcmp(s->name, name) == 0) {
      return s;
    }
  }
  struct seg *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return NULL;
  }
  snprintf(s->name, sizeof(s->name), "%s", name);
  s->next = w->segs;
  w->segs = s;
  return s;
}

static void segs_try(struct worker *w, struct seg *s);

static void segs_delete(struct worker *w, struct seg *s) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/seg/%s", w->d->spool_dir, s->name);
  if (unlink(path) != 0 && errno != ENOENT) {
    log_msg("error", "spool: cannot delete finished segment %s: %s", path,
            strerror(errno));
    s->pinned = 1; /* start-up repair will try again */
    return;
  }
  if (s->num_dependents > 0) {
    /* The dependents hold DONEs of messages whose MESSAGE was here: this
     * deletion must be durable before theirs. */
    snprintf(path, sizeof(path), "%s/seg", w->d->spool_dir);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
      log_msg("error", "spool: fsync of %s: %s", path, strerror(errno));
      for (size_t i = 0; i < s->num_dependents; i++) {
        s->dependents[i]->pinned = 1;
      }
    }
    if (fd >= 0) {
      close(fd);
    }
  }
  struct log_rec r;
  log_begin(&r, "segment_reclaimed");
  log_str(&r, "segment", s->name);
  log_end(&r);
  METRIC_ADD(w->m.segments_reclaimed, 1);
  for (struct seg **pp = &w->segs; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  }
  struct seg **deps = s->dependents;
  size_t n = s->num_dependents;
  free(s->old_deps);
  free(s);
  for (size_t i = 0; i < n; i++) {
    deps[i]->live_deps--;
    segs_try(w, deps[i]);
  }
  free(deps);
}

/* segs_old_deps_gone: 1 when every old group s waits for is gone (the
 * gone ones are dropped from the list on the way). */
static int segs_old_deps_gone(struct seg *s) {
  size_t kept = 0;
  for (size_t i = 0; i < s->num_old_deps; i++) {
    if (__atomic_load_n(&s->old_deps[i]->state, __ATOMIC_ACQUIRE) !=
        GROUP_GONE) {
      s->old_deps[kept++] = s->old_deps[i];
    }
  }
  s->num_old_deps = kept;
  return kept == 0;
}

static void segs_try(struct worker *w, struct seg *s) {
  if (s != NULL && !s->current && s->open == 0 && s->live_deps == 0 &&
      !s->pinned && segs_old_deps_gone(s) &&
      /* Never the one being written, whatever the bookkeeping says. */
      strcmp(s->name, spool_writer_segment(w->spool)) != 0) {
    segs_delete(w, s);
  }
}

void segs_pin(struct seg *s) {
  if (s != NULL) {
    s->pinned = 1;
  }
}

void segs_message(struct seg *s) {
  if (s != NULL) {
    s->open++;
  }
}

void segs_message_done(struct worker *w, struct seg *s) {
  if (s != NULL) {
    s->open--;
    segs_try(w, s);
  }
}

void segs_depend(struct seg *s, struct seg *on, int on_old) {
  if (s == NULL || s == on) {
    return;
  }
  if (on == NULL) {
    s->pinned |= on_old; /* a recovered message's MESSAGE is in an old one */
    return;
  }
  for (size_t i = 0; i < on->num_dependents; i++) {
    if (on->dependents[i] == s) {
      return;
    }
  }
  if (on->num_dependents == on->cap_dependents) {
    size_t cap = on->cap_dependents ? on->cap_dependents * 2 : 4;
    struct seg **d = realloc(on->dependents, cap * sizeof(*d));
    if (d == NULL) {
      s->pinned = 1; /* cannot track it: keep s until the next start */
      return;
    }
    on->dependents = d;
    on->cap_dependents = cap;
  }
  on->dependents[on->num_dependents++] = s;
  s->live_deps++;
}

void segs_current(struct worker *w, const char *name) {
  struct seg *cur = segs_get(w, name);
  for (struct seg *s = w->segs, *next; s != NULL; s = next) {
    next = s->next; /* segs_try may delete s (and others behind it) */
    if (s != cur && s->current) {
      s->current = 0;
      segs_try(w, s);
      next = w->segs; /* the list may have changed: walk it again */
    }
  }
  if (cur != NULL) {
    cur->current = 1;
  }
}

void segs_free(struct worker *w) {
  while (w->segs != NULL) {
    struct seg *s = w->segs;
    w->segs = s->next;
    free(s->dependents);
    free(s->old_deps);
    free(s);
  }
  struct segs_old *o = segs_old;
  if (o != NULL && __atomic_sub_fetch(&o->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    segs_old = NULL;
    free(o->segs);
    free(o->groups);
    free(o);
  }
}

/* ---- old segments ---- */

static int seg_old_cmp(const void *a, const void *b) {
  return strcmp(((const struct seg_old *)a)->name,
                ((const struct seg_old *)b)->name);
}

/* segs_old_keep marks the groups that stay while running: those holding
 * a file that is not one of our segment names, or the newest segment of
 * a thread without a writer in this run (its sequence high-water mark;
 * the writers of this run have made newer ones of theirs). */
static void segs_old_keep(struct segs_old *o, unsigned num_workers) {
  for (size_t i = 0; i < o->num_segs; i++) {
    unsigned thread, next_thread;
    uint32_t seq;
    if (!spool_segment_name_parse(o->segs[i].name, &thread, &seq)) {
      o->segs[i].group->keep = 1;
      continue;
    }
    /* Sorted by name: the last of a thread's run is its newest. */
    int last =
        i + 1 == o->num_segs ||
        !spool_segment_name_parse(o->segs[i + 1].name, &next_thread, &seq) ||
        next_thread != thread;
    if (last && thread >= num_workers) {
      o->segs[i].group->keep = 1;
    }
  }
}

/* segs_old_build makes the table from the scan's kept segments. Returns
 * it, or NULL (out of memory: recovered messages then pin theirs). */
static struct segs_old *segs_old_build(struct daemon *d,
                                       const struct spool_scan *scan) {
  size_t n = scan->num_kept_segments;
  struct segs_old *o = calloc(1, sizeof(*o));
  if (o == NULL) {
    return NULL;
  }
  o->segs = calloc(n ? n : 1, sizeof(*o->segs));
  o->groups = calloc(n ? n : 1, sizeof(*o->groups));
  if (o->segs == NULL || o->groups == NULL) {
    free(o->segs);
    free(o->groups);
    free(o);
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    const struct spool_scan_segment *ss = &scan->segments[i];
    struct seg_old *so = &o->segs[i];
    snprintf(so->name, sizeof(so->name), "%s", ss->name);
    so->has_message = ss->has_message;
    size_t g = 0; /* the group of the first segment with the same id */
    while (g < i && scan->segments[g].group != ss->group) {
      g++;
    }
    so->group = g < i ? o->segs[g].group : &o->groups[o->num_groups++];
  }
  o->num_segs = n;
  qsort(o->segs, n, sizeof(*o->segs), seg_old_cmp);
  segs_old_keep(o, d->num_workers);
  o->gen = 1; /* every worker sweeps the groups at its first tick */
  o->refs = d->num_workers;
  return o;
}

struct seg_group *segs_old_message(struct worker *w,
                                   const struct spool_scan *scan,
                                   const char *segment) {
  if (segs_old == NULL) {
    segs_old = segs_old_build(w->d, scan);
    if (segs_old == NULL) {
      return NULL;
    }
  }
  struct seg_old key;
  snprintf(key.name, sizeof(key.name), "%s", segment);
  struct seg_old *so = bsearch(&key, segs_old->segs, segs_old->num_segs,
                               sizeof(key), seg_old_cmp);
  if (so == NULL) {
    return NULL; /* not a kept segment: a bug; the caller pins */
  }
  __atomic_add_fetch(&so->group->open, 1, __ATOMIC_RELAXED);
  return so->group;
}

void segs_old_pin(struct seg_group *g) {
  if (g != NULL) {
    __atomic_store_n(&g->pinned, 1, __ATOMIC_RELEASE);
  }
}

/* segs_old_unlink deletes the group's segments that hold MESSAGE records
 * (has_message) or the others, then makes the deletions durable. Returns
 * 0, or -1 (logged; the rest stays for start-up repair). */
static int segs_old_unlink(struct worker *w, struct seg_group *g,
                           int has_message) {
  char path[4096];
  int any = 0;
  for (size_t i = 0; i < segs_old->num_segs; i++) {
    const struct seg_old *so = &segs_old->segs[i];
    if (so->group != g || so->has_message != has_message) {
      continue;
    }
    snprintf(path, sizeof(path), "%s/seg/%s", w->d->spool_dir, so->name);
    if (unlink(path) != 0 && errno != ENOENT) {
      log_msg("error", "spool: cannot delete finished segment %s: %s", path,
              strerror(errno));
      return -1;
    }
    any = 1;
    struct log_rec r;
    log_begin(&r, "segment_reclaimed");
    log_str(&r, "segment", so->name);
    log_str(&r, "recovered", "yes");
    log_end(&r);
    METRIC_ADD(w->m.segments_reclaimed, 1);
  }
  if (!any) {
    return 0;
  }
  snprintf(path, sizeof(path), "%s/seg", w->d->spool_dir);
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int rc = fd >= 0 && fsync(fd) == 0 ? 0 : -1;
  if (rc != 0) {
    log_msg("error", "spool: fsync of %s: %s", path, strerror(errno));
  }
  if (fd >= 0) {
    close(fd);
  }
  return rc;
}

/* segs_retry_old re-examines this worker's segments that wait for old
 * groups. */
static void segs_retry_old(struct worker *w) {
  for (struct seg *s = w->segs, *next; s != NULL; s = next) {
    next = s->next;
    if (s->num_old_deps > 0 && segs_old_deps_gone(s)) {
      segs_try(w, s);
      next = w->segs; /* the list may have changed: walk it again */
    }
  }
}

/* segs_old_try deletes group g if nothing in it is needed any more; one
 * worker wins the right to (state LIVE -> DELETING). */
static void segs_old_try(struct worker *w, struct seg_group *g) {
  if (g->keep || __atomic_load_n(&g->open, __ATOMIC_ACQUIRE) != 0 ||
      __atomic_load_n(&g->pinned, __ATOMIC_ACQUIRE)) {
    return;
  }
  int live = GROUP_LIVE;
  if (!__atomic_compare_exchange_n(&g->state, &live, GROUP_DELETING, 0,
                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    return;
  }
  /* MESSAGE records first: a crash in between leaves DONEs without their
   * MESSAGE (harmless), not the other way round. */
  if (segs_old_unlink(w, g, 1) != 0 || segs_old_unlink(w, g, 0) != 0) {
    return; /* stays DELETING: kept until the next start */
  }
  __atomic_store_n(&g->state, GROUP_GONE, __ATOMIC_RELEASE);
  __atomic_add_fetch(&segs_old->gen, 1, __ATOMIC_RELEASE);
  segs_retry_old(w);
}

void segs_old_message_done(struct worker *w, struct seg_group *g) {
  if (g != NULL && __atomic_sub_fetch(&g->open, 1, __ATOMIC_ACQ_REL) == 0) {
    segs_old_try(w, g);
  }
}

void segs_depend_old(struct seg *s, struct seg_group *on) {
  if (s == NULL) {
    return;
  }
  if (on == NULL) {
    s->pinned = 1; /* its MESSAGE's group is unknown: the next start */
    return;
  }
  for (size_t i = 0; i < s->num_old_deps; i++) {
    if (s->old_deps[i] == on) {
      return;
    }
  }
  if (s->num_old_deps == s->cap_old_deps) {
    size_t cap = s->cap_old_deps ? s->cap_old_deps * 2 : 4;
    struct seg_group **d = realloc(s->old_deps, cap * sizeof(*d));
    if (d == NULL) {
      s->pinned = 1;
      return;
    }
    s->old_deps = d;
    s->cap_old_deps = cap;
  }
  s->old_deps[s->num_old_deps++] = on;
}

void segs_tick(struct worker *w) {
  struct segs_old *o = segs_old;
  if (o == NULL) {
    return;
  }
  unsigned gen = __atomic_load_n(&o->gen, __ATOMIC_ACQUIRE);
  if (gen == w->segs_old_seen) {
    return;
  }
  w->segs_old_seen = gen;
  /* Groups with nothing open from the start (kept only as a high-water
   * mark that this run's writers have passed) go at the first tick. */
  for (size_t i = 0; i < o->num_groups; i++) {
    segs_old_try(w, &o->groups[i]);
  }
  segs_retry_old(w);
}
