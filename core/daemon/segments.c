/* core/daemon/segments.c — a worker's spool segments of this run, deleted
 * while the daemon runs as soon as nothing in them is needed (start-up
 * repair reclaims the rest, see core/spool.h).
 *
 * Every record in a segment this worker created belongs to a message this
 * worker owns (it commits its messages, and writes the DONE and HOLD
 * records of the messages it owns). A segment S may go when:
 *   - the writer has moved on (S is not the current segment);
 *   - every message whose MESSAGE record is in S is finished (open == 0);
 *   - every segment holding the MESSAGE of a message with a DONE or HOLD
 *     record in S is gone already (live_deps == 0): deleting S first would
 *     lose those records, and the message would be delivered again after
 *     a restart;
 *   - S holds no record of a message recovered at start-up (pinned): their
 *     MESSAGE records lie in older segments that only start-up repair
 *     deletes.
 * A deleted segment's dependents are re-examined; the segment directory
 * is made durable before a dependent goes, so a crash never leaves the
 * DONE records deleted and their MESSAGE in place.
 *
 * Thread: the owning worker's only. */
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
};

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
  free(s);
  for (size_t i = 0; i < n; i++) {
    deps[i]->live_deps--;
    segs_try(w, deps[i]);
  }
  free(deps);
}

static void segs_try(struct worker *w, struct seg *s) {
  if (s != NULL && !s->current && s->open == 0 && s->live_deps == 0 &&
      !s->pinned &&
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
    free(s);
  }
}
