/* core/daemon/local.c — the local delivery pool: a few threads that write
 * Maildir messages (core/maildir.h), because writing, fsync and rename
 * block and must not stall a worker's ring. It also runs other blocking
 * jobs given their own run/done functions (AUTH password checks, whose
 * hashes cost milliseconds of CPU on purpose).
 *
 * Flow: a worker submits a local_job (local_pool_submit); a pool thread
 * delivers each recipient, then appends the job to its worker's done list
 * and wakes the worker (eventfd); the worker takes its finished jobs on
 * OP_WAKE (local_take_done) and records the outcomes (delivery.c).
 *
 * Stop: workers stop submitting when they stop and wait for their jobs in
 * flight (delivery_idle); main stops the pool after the workers exited. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/daemon/daemon.h"
#include "core/log.h"
#include "core/maildir.h"

void local_job_free(struct local_job *lj) {
  buf_free(&lj->storage);
  buf_free(&lj->rcpt_storage);
  free(lj->rcpts);
  free(lj->results);
  free(lj);
}

static void local_run(struct local_job *lj) {
  for (size_t k = 0; k < lj->num_rcpts; k++) {
    struct local_result *res = &lj->results[k];
    char dir[4096], err[200] = "";
    if (maildir_path_expand(lj->tmpl, lj->rcpts[k], dir, sizeof(dir), err,
                            sizeof(err)) != 0) {
      res->status = -2;
      snprintf(res->text, sizeof(res->text), "bad mailbox: %s", err);
      continue;
    }
    struct maildir_delivery md = {
        .dir = dir,
        .return_path = lj->sender,
        .delivered_to = lj->rcpts[k],
        .body = lj->body.data,
        .body_len = lj->body.len,
        .hostname = lj->hostname,
    };
    char name[512];
    int rc = maildir_deliver(&md, name, sizeof(name), err, sizeof(err));
    res->status = rc;
    if (rc == 0) {
      snprintf(res->text, sizeof(res->text), "%.200s", name);
    } else {
      snprintf(res->text, sizeof(res->text), "maildir %.120s: %.120s", dir,
               err);
    }
  }
}

static void *local_main(void *arg) {
  struct daemon *d = arg;
  pthread_mutex_lock(&d->local_mu);
  for (;;) {
    while (d->local_head == NULL && !d->local_stop) {
      pthread_cond_wait(&d->local_cv, &d->local_mu);
    }
    struct local_job *lj = d->local_head;
    if (lj == NULL) {
      break; /* stopping and nothing left */
    }
    d->local_head = lj->next;
    if (d->local_head == NULL) {
      d->local_tail = NULL;
    }
    pthread_mutex_unlock(&d->local_mu);
    if (lj->run != NULL) {
      lj->run(lj);
    } else {
      local_run(lj);
    }
    struct worker *w = lj->w;
    pthread_mutex_lock(&w->local_mu);
    lj->next = w->local_done;
    w->local_done = lj;
    pthread_mutex_unlock(&w->local_mu);
    worker_wake(w);
    pthread_mutex_lock(&d->local_mu);
  }
  pthread_mutex_unlock(&d->local_mu);
  return NULL;
}

int local_pool_start(struct daemon *d, unsigned threads) {
  pthread_mutex_init(&d->local_mu, NULL);
  pthread_cond_init(&d->local_cv, NULL);
  if (threads > sizeof(d->local_threads) / sizeof(d->local_threads[0])) {
    threads = sizeof(d->local_threads) / sizeof(d->local_threads[0]);
  }
  for (unsigned i = 0; i < threads; i++) {
    if (pthread_create(&d->local_threads[i], NULL, local_main, d) != 0) {
      return -1;
    }
    d->num_local_threads++;
  }
  return 0;
}

void local_pool_submit(struct daemon *d, struct local_job *lj) {
  lj->next = NULL;
  pthread_mutex_lock(&d->local_mu);
  if (d->local_tail != NULL) {
    d->local_tail->next = lj;
  } else {
    d->local_head = lj;
  }
  d->local_tail = lj;
  pthread_cond_signal(&d->local_cv);
  pthread_mutex_unlock(&d->local_mu);
}

/* local_pool_submit_front queues a job ahead of the others (a client is
 * waiting on it). */
void local_pool_submit_front(struct daemon *d, struct local_job *lj) {
  pthread_mutex_lock(&d->local_mu);
  lj->next = d->local_head;
  d->local_head = lj;
  if (d->local_tail == NULL) {
    d->local_tail = lj;
  }
  pthread_cond_signal(&d->local_cv);
  pthread_mutex_unlock(&d->local_mu);
}

void local_pool_stop(struct daemon *d) {
  pthread_mutex_lock(&d->local_mu);
  d->local_stop = 1;
  pthread_cond_broadcast(&d->local_cv);
  pthread_mutex_unlock(&d->local_mu);
  for (unsigned i = 0; i < d->num_local_threads; i++) {
    pthread_join(d->local_threads[i], NULL);
  }
  d->num_local_threads = 0;
  /* Workers wait for their jobs before they exit, so none is left. */
}

void local_take_done(struct worker *w) {
  pthread_mutex_lock(&w->local_mu);
  struct local_job *list = w->local_done;
  w->local_done = NULL;
  pthread_mutex_unlock(&w->local_mu);
  /* Oldest first: the list was pushed at its head. */
  struct local_job *rev = NULL;
  while (list != NULL) {
    struct local_job *next = list->next;
    list->next = rev;
    rev = list;
    list = next;
  }
  while (rev != NULL) {
    struct local_job *next = rev->next;
    if (rev->done != NULL) {
      rev->done(w, rev);
    } else {
      delivery_local_done(w, rev);
    }
    rev = next;
  }
}
