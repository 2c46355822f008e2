/* core/log.h — one line per event, plain key=value or JSON.
 *
 * Owns: log formatting and a per-thread line buffer flushed with one
 * write(2) to stderr per loop turn (log_flush) or when it fills, so a busy
 * thread does not pay a syscall per event. Lines never interleave: each
 * flush writes whole lines. Secrets are never passed here.
 *
 * Usage: struct log_rec r; log_begin(&r, "queued"); log_str(&r, "qid", id);
 *        log_u64(&r, "size", n); log_end(&r);
 * Thread: log_rec is on the caller's stack; the buffer is thread-local. */
#ifndef POSTSEAL_CORE_LOG_H
#define POSTSEAL_CORE_LOG_H

#include <stddef.h>
#include <stdint.h>

#define LOG_LINE_MAX 2048 /* longer lines are cut, marked with "..." */

struct log_rec {
  char line[LOG_LINE_MAX];
  size_t len;
  int truncated;
  int in_string; /* JSON: inside a value string (to close a cut line) */
};

/* log_set_json selects the format for every thread (set before threads). */
void log_set_json(int json);
/* log_set_program sets the name shown in plain lines ("postseald"). */
void log_set_program(const char *name);

void log_begin(struct log_rec *r, const char *event);
void log_str(struct log_rec *r, const char *key, const char *value);
void log_u64(struct log_rec *r, const char *key, uint64_t value);
void log_i64(struct log_rec *r, const char *key, int64_t value);
void log_end(struct log_rec *r);

/* log_flush writes this thread's buffered lines. Call once per loop turn
 * and before exit. */
void log_flush(void);

/* log_msg: a free-form line for start-up and errors (event "msg"). */
void log_msg(const char *level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
