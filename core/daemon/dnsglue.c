/* core/daemon/dnsglue.c — a worker's resolver (policy/dns) on its ring.
 *
 * policy/dns knows no loop: c-ares tells, through dns_io.watch, which
 * sockets it wants read or written; each such socket gets a multishot
 * IORING_OP_POLL_ADD here, and a readiness completion goes back through
 * dns_process_fd. Timeouts run from the worker's one-second tick.
 *
 * A watch is replaced, never changed: when c-ares wants another mask or
 * drops the socket, the old watch is marked dead, its poll removed, and it
 * is freed when its last completion arrives. So a completion for a socket
 * c-ares already closed (and whose fd number may be reused) is ignored.
 *
 * Thread: the worker's own. */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/daemon/daemon.h"
#include "core/log.h"

struct dns_watch {
  struct dns_watch *next; /* the worker's watches, dead ones too */
  struct worker *w;
  int fd;
  unsigned mask; /* POLLIN | POLLOUT */
  int armed;     /* a poll is in flight */
  int dead;      /* replaced or dropped: completions ignored */
  int busy;      /* its completion is being handled: not freed under it */
} __attribute__((aligned(16)));

static void watch_arm(struct dns_watch *wt) {
  struct io_uring_sqe *sqe = worker_get_sqe(wt->w);
  io_uring_prep_poll_multishot(sqe, wt->fd, wt->mask);
  io_uring_sqe_set_data64(sqe, op_tag(wt, OP_DNS_POLL));
  wt->armed = 1;
}

static void watch_free(struct worker *w, struct dns_watch *wt) {
  for (struct dns_watch **pp = &w->dns_watches; *pp != NULL;
       pp = &(*pp)->next) {
    if (*pp == wt) {
      *pp = wt->next;
      break;
    }
  }
  free(wt);
}

/* watch_kill marks a watch dead; it is freed now, or by its last CQE. */
static void watch_kill(struct worker *w, struct dns_watch *wt) {
  wt->dead = 1;
  if (!wt->armed) {
    if (!wt->busy) {
      watch_free(w, wt);
    }
    return;
  }
  struct io_uring_sqe *sqe = worker_get_sqe(w);
  io_uring_prep_poll_remove(sqe, op_tag(wt, OP_DNS_POLL));
  io_uring_sqe_set_data64(sqe, 0);
}

static void glue_watch(void *ctx, int fd, int want_read, int want_write) {
  struct worker *w = ctx;
  unsigned mask = (want_read ? POLLIN : 0) | (want_write ? POLLOUT : 0);
  struct dns_watch *wt = w->dns_watches;
  while (wt != NULL && (wt->dead || wt->fd != fd)) {
    wt = wt->next;
  }
  if (wt != NULL && wt->mask == mask) {
    return;
  }
  if (wt != NULL) {
    watch_kill(w, wt);
  }
  if (mask == 0) {
    return;
  }
  wt = aligned_alloc(16, sizeof(*wt));
  if (wt == NULL) {
    log_msg("error", "dns: out of memory watching a socket");
    return;
  }
  memset(wt, 0, sizeof(*wt));
  wt->w = w;
  wt->fd = fd;
  wt->mask = mask;
  wt->next = w->dns_watches;
  w->dns_watches = wt;
  watch_arm(wt);
}

int worker_dns_init(struct worker *w, char *err, size_t err_len) {
  const struct config *cfg = w->cfg;
  struct dns_config dc = {
      .servers = (const char *const *)cfg->dns_servers,
      .num_servers = cfg->num_dns_servers,
      .timeout_ms = cfg->dns_timeout_ms,
      .tries = cfg->dns_tries,
      .cache_max = 16384, /* about 10 MiB per worker when full */
  };
  struct dns_io io = {.ctx = w, .watch = glue_watch};
  char msg[256] = "";
  w->dns = dns_new(&dc, &io, msg, sizeof(msg));
  if (w->dns == NULL) {
    snprintf(err, err_len, "dns: %s", msg);
    return -1;
  }
  return 0;
}

void worker_dns_on_poll(struct worker *w, struct dns_watch *wt, int res,
                        unsigned flags) {
  if (!(flags & IORING_CQE_F_MORE)) {
    wt->armed = 0;
  }
  if (res >= 0 && !wt->dead && w->dns != NULL) {
    int readable = (res & (POLLIN | POLLERR | POLLHUP)) != 0;
    int writable = (res & POLLOUT) != 0;
    /* dns_process_fd may drop this socket (and so kill wt). */
    wt->busy = 1;
    dns_process_fd(w->dns, wt->fd, readable, writable);
    dns_tick(w->dns, daemon_mono_ns() / 1000000); /* its clock: monotonic */
    wt->busy = 0;
  } else if (res < 0 && res != -ECANCELED && !wt->dead) {
    log_msg("error", "dns: poll on socket %d: %s", wt->fd, strerror(-res));
    if (res == -EBADF) {
      wt->dead = 1;
    }
  }
  if (wt->dead) {
    if (!wt->armed) {
      watch_free(w, wt);
    }
    return;
  }
  if (!wt->armed) {
    watch_arm(wt);
  }
}

void worker_dns_tick(struct worker *w) {
  if (w->dns == NULL) {
    return;
  }
  dns_tick(w->dns, daemon_mono_ns() / 1000000); /* its clock: monotonic */
  /* The scrape reads these from another thread: atomic stores. */
  struct dns_stats st;
  dns_get_stats(w->dns, &st);
  __atomic_store_n(&w->m.dns_queries, st.queries, __ATOMIC_RELAXED);
  __atomic_store_n(&w->m.dns_cache_hits, st.cache_hits, __ATOMIC_RELAXED);
  __atomic_store_n(&w->m.dns_cache_misses, st.cache_misses, __ATOMIC_RELAXED);
  __atomic_store_n(&w->m.dns_coalesced, st.coalesced, __ATOMIC_RELAXED);
  __atomic_store_n(&w->m.dns_tempfails, st.tempfails, __ATOMIC_RELAXED);
  __atomic_store_n(&w->m.dns_timeouts, st.timeouts, __ATOMIC_RELAXED);
}

void worker_dns_free(struct worker *w) {
  dns_free(w->dns); /* may call watch(fd, 0, 0): watches are killed */
  w->dns = NULL;
  while (w->dns_watches != NULL) {
    struct dns_watch *wt = w->dns_watches;
    w->dns_watches = wt->next;
    free(wt); /* the ring is torn down next: no completion will come */
  }
}
