/* core/daemon/main.c — postseald: configuration, recovery, signals, the
 * worker threads. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/daemon/daemon.h"
#include "core/log.h"

static struct daemon the_daemon;

static void usage(FILE *f) {
  fprintf(f, "usage: postseald [-c FILE] [--check-config] [--version]\n"
             "  -c, --config FILE   YAML configuration (default: built-in "
             "defaults)\n"
             "      --check-config  validate the configuration and exit\n"
             "Environment POSTSEAL_* variables override the file; see "
             "docs/configuration.md.\n");
}

/* raise_nofile lifts the open-file limit to its hard maximum: every session
 * is a descriptor, and thousands of idle sessions are normal for a relay. */
static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

/* recover_spool replays the segments before any listener opens: torn tails
 * are cut, acknowledged messages are counted, queue ids continue above the
 * largest one found. */
static int recover_spool(struct daemon *d, struct spool_scan *out_scan) {
  struct spool_scan scan;
  char err[512] = "";
  if (spool_scan(d->spool_dir, 1, &scan, err, sizeof(err)) != 0) {
    log_msg("error", "spool recovery failed: %s", err);
    return -1;
  }
  uint64_t pending = 0;
  for (size_t i = 0; i < scan.num_entries; i++) {
    if (scan.entries[i].num_done < scan.entries[i].num_rcpts) {
      pending++;
    }
  }
  d->recovered_messages = pending;
  d->first_queue_id = scan.max_queue_id + 1;
  struct log_rec r;
  log_begin(&r, "recovered");
  log_str(&r, "spool", d->cfg->spool_dir);
  log_u64(&r, "segments", scan.num_segments);
  log_u64(&r, "messages", pending);
  log_u64(&r, "torn_tails", scan.num_torn);
  log_u64(&r, "reclaimed_segments", scan.num_reclaimed);
  log_end(&r);
  *out_scan = scan;
  return 0;
}

/* queue_recovered hands every unfinished message to the worker that owns
 * it (queue_id % workers), with the recipients that have no DONE yet. */
static void queue_recovered(struct daemon *d, const struct spool_scan *scan) {
  for (size_t i = 0; i < scan->num_entries; i++) {
    const struct spool_entry *e = &scan->entries[i];
    if (e->num_done >= e->num_rcpts) {
      continue;
    }
    delivery_recover(&d->workers[e->queue_id % d->num_workers], scan, e);
  }
}

/* free_retired_configs frees the replaced configurations that no worker
 * can still be using: each worker publishes the reload generation it has
 * switched to. */
static void free_retired_configs(struct daemon *d) {
  uint64_t oldest = UINT64_MAX;
  for (unsigned i = 0; i < d->num_workers; i++) {
    uint64_t seen =
        __atomic_load_n(&d->workers[i].seen_reload_gen, __ATOMIC_ACQUIRE);
    oldest = seen < oldest ? seen : oldest;
  }
  size_t kept = 0;
  for (size_t i = 0; i < d->num_old_cfgs; i++) {
    if (d->old_cfg_gens[i] <= oldest) {
      config_free(d->old_cfgs[i]);
    } else {
      d->old_cfgs[kept] = d->old_cfgs[i];
      d->old_cfg_gens[kept++] = d->old_cfg_gens[i];
    }
  }
  d->num_old_cfgs = kept;
}

/* warn_config logs settings that work but are likely not what the
 * operator wants. */
static void warn_config(const struct config *cfg) {
  const struct runtime *rt = cfg_runtime(cfg);
  if (cfg->open_relay) {
    log_msg("warning", "open_relay is set: anyone may relay through this "
                       "server");
  }
  int submission = cfg->submission.enabled || cfg->submissions.enabled;
  if (submission && cfg->submission_require_auth && rt->auth == NULL) {
    log_msg("warning", "submission requires AUTH but auth.passwd_file is "
                       "not set: the submission listeners accept no mail");
  } else if (cfg->submission.enabled && rt->tls_server == NULL &&
             (cfg->submission_require_tls || rt->auth != NULL)) {
    log_msg("warning", "tls.cert_file is not set: the submission listener "
                       "offers neither STARTTLS nor AUTH");
  }
}

static void reload(struct daemon *d) {
  char err[1024];
  free_retired_configs(d);
  if (d->num_old_cfgs == sizeof(d->old_cfgs) / sizeof(d->old_cfgs[0])) {
    log_msg("error", "reload refused: a worker has not yet switched to an "
                     "earlier configuration; try again");
    return;
  }
  struct config *cfg = config_load(d->config_path, err, sizeof(err));
  if (cfg == NULL || runtime_attach(cfg, err, sizeof(err)) != 0) {
    log_msg("error", "reload refused, keeping the running configuration: %s",
            err);
    config_free(cfg);
    return;
  }
  warn_config(cfg);
  if (strcmp(cfg->spool_dir, d->spool_dir) != 0) {
    log_msg("warning",
            "spool_dir changed to %s: it takes effect on restart; "
            "the spool stays %s",
            cfg->spool_dir, d->spool_dir);
  }
  d->old_cfgs[d->num_old_cfgs] = d->cfg;
  d->old_cfg_gens[d->num_old_cfgs++] = d->reload_gen + 1;
  log_set_json(cfg->log_format == CONFIG_LOG_JSON);
  __atomic_store_n(&d->cfg, cfg, __ATOMIC_RELEASE);
  __atomic_add_fetch(&d->reload_gen, 1, __ATOMIC_RELEASE);
  for (unsigned i = 0; i < d->num_workers; i++) {
    worker_wake(&d->workers[i]);
  }
  log_msg("info", "configuration reloaded%s",
          "; listener and thread changes take effect on restart");
}

/* workers_running counts workers whose thread has not finished. */
static unsigned workers_running(struct daemon *d) {
  unsigned n = 0;
  for (unsigned i = 0; i < d->num_workers; i++) {
    n += !__atomic_load_n(&d->workers[i].exited, __ATOMIC_ACQUIRE);
  }
  return n;
}

/* serve waits for signals on the main thread; workers never see them. A
 * first SIGTERM/SIGINT drains; a second one closes sessions at once. */
static void serve(struct daemon *d, const sigset_t *set) {
  const struct timespec poll = {.tv_sec = 0, .tv_nsec = 200 * 1000 * 1000};
  for (;;) {
    int sig = sigtimedwait(set, NULL, &poll);
    if (sig < 0) {
      if (__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE) &&
          workers_running(d) == 0) {
        return;
      }
      continue;
    }
    if (sig == SIGHUP) {
      reload(d);
      continue;
    }
    if (!__atomic_load_n(&d->stop, __ATOMIC_ACQUIRE)) {
      log_msg("info",
              "signal %d: draining sessions and stopping (again to "
              "close them now)",
              sig);
      __atomic_store_n(&d->stop, 1, __ATOMIC_RELEASE);
    } else {
      log_msg("info", "signal %d: closing sessions now", sig);
      __atomic_store_n(&d->force, 1, __ATOMIC_RELEASE);
    }
    for (unsigned i = 0; i < d->num_workers; i++) {
      worker_wake(&d->workers[i]);
    }
  }
}

/* lock_spool takes the spool lock for the daemon's lifetime: one daemon
 * per spool, and `postseal queue` writes offline only while none runs. An
 * offline queue command holds it briefly, so a busy lock is retried for
 * two seconds before giving up. */
static int lock_spool(struct daemon *d) {
  char err[512];
  for (int i = 0; i < 20; i++) {
    int rc = spool_lock(d->spool_dir, &d->lock_fd, err, sizeof(err));
    if (rc == 0) {
      return 0;
    }
    if (rc < 0) {
      log_msg("error", "spool %s: %s", d->spool_dir, err);
      return -1;
    }
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  log_msg("error",
          "spool %s is locked by another process (another postseald, or a "
          "postseal queue command); not starting",
          d->spool_dir);
  return -1;
}

static int start_workers(struct daemon *d, const struct spool_scan *scan) {
  char err[512];
  d->num_workers = d->cfg->threads;
  if (d->num_workers > DAEMON_MAX_WORKERS) {
    d->num_workers = DAEMON_MAX_WORKERS;
  }
  for (unsigned i = 0; i < d->num_workers; i++) {
    if (worker_init(&d->workers[i], d, i, err, sizeof(err)) != 0) {
      log_msg("error", "%s", err);
      return -1;
    }
  }
  queue_recovered(d, scan);
  /* Maildir writes block: a small pool does them off the rings. */
  /* Blocking work: Maildir writes, AUTH checks, MTA-STS fetches (at most
   * one per worker at a time), so two threads more than workers. */
  if (local_pool_start(d, d->num_workers + 2) != 0) {
    log_msg("error", "cannot start the local delivery threads");
    return -1;
  }
  for (unsigned i = 0; i < d->num_workers; i++) {
    if (pthread_create(&d->workers[i].thread, NULL, worker_main,
                       &d->workers[i]) != 0) {
      log_msg("error", "pthread_create: %s", strerror(errno));
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  static const struct option opts[] = {
      {"config", required_argument, NULL, 'c'},
      {"check-config", no_argument, NULL, 'C'},
      {"version", no_argument, NULL, 'V'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  struct daemon *d = &the_daemon;
  int check_only = 0;
  int opt;
  while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
    switch (opt) {
    case 'c':
      d->config_path = optarg;
      break;
    case 'C':
      check_only = 1;
      break;
    case 'V':
      printf("postseald 0.1.0\n");
      return 0;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }
  log_set_program("postseald");
  char err[1024];
  d->cfg = config_load(d->config_path, err, sizeof(err));
  if (d->cfg == NULL || runtime_attach(d->cfg, err, sizeof(err)) != 0) {
    fprintf(stderr, "postseald: %s\n", err);
    config_free(d->cfg);
    return 1;
  }
  if (check_only) {
    printf("%s: configuration OK\n",
           d->config_path ? d->config_path : "(built-in defaults)");
    config_free(d->cfg);
    return 0;
  }
  log_set_json(d->cfg->log_format == CONFIG_LOG_JSON);
  warn_config(d->cfg);
  d->auth_limiter = auth_limiter_new(65536);
  if (d->auth_limiter == NULL || tlsrpt_init(d) != 0 || dmarcrpt_init(d) != 0) {
    fprintf(stderr, "postseald: out of memory\n");
    return 1;
  }
  raise_nofile();
  d->start_ms = daemon_now_ms();

  /* Block the signals before any thread exists, so all inherit the mask
   * and only sigwait() in serve() receives them. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  struct spool_scan scan;
  d->spool_dir = strdup(d->cfg->spool_dir);
  if (d->spool_dir == NULL || lock_spool(d) != 0 ||
      recover_spool(d, &scan) != 0) {
    log_flush();
    return 1;
  }
  int rc = start_workers(d, &scan);
  spool_scan_free(&scan);
  if (rc != 0) {
    log_flush();
    return 1;
  }
  log_msg("info",
          "postseald ready: smtp=%s submission=%s submissions=%s "
          "metrics=%s threads=%u spool=%s tls=%s auth=%s",
          d->cfg->smtp.enabled ? d->cfg->smtp.text : "off",
          d->cfg->submission.enabled ? d->cfg->submission.text : "off",
          d->cfg->submissions.enabled ? d->cfg->submissions.text : "off",
          d->cfg->metrics.enabled ? d->cfg->metrics.text : "off",
          d->num_workers, d->cfg->spool_dir,
          cfg_runtime(d->cfg)->tls_server ? "on" : "off",
          cfg_runtime(d->cfg)->auth ? "on" : "off");
  serve(d, &set);
  for (unsigned i = 0; i < d->num_workers; i++) {
    pthread_join(d->workers[i].thread, NULL);
  }
  local_pool_stop(d);
  mtasts_free(d); /* after the pool: it hands fetches back to workers */
  tlsrpt_free(d); /* after the workers: they hand periods over */
  dmarcrpt_free(d);
  if (__atomic_load_n(&d->failed, __ATOMIC_ACQUIRE)) {
    log_msg("error", "postseald stopped: a worker failed to start");
    log_flush();
    return 1;
  }
  log_msg("info", "postseald stopped; spool durable");
  for (size_t i = 0; i < d->num_old_cfgs; i++) {
    config_free(d->old_cfgs[i]);
  }
  config_free(d->cfg);
  auth_limiter_free(d->auth_limiter);
  free(d->spool_dir);
  return 0;
}
