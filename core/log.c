/* core/log.c — event lines; see log.h. */
#include "core/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define LOG_THREAD_BUF (64 * 1024)

static int log_json;
static const char *log_program = "postseal";
static __thread char log_buf[LOG_THREAD_BUF];
static __thread size_t log_buf_len;

void log_set_json(int json) {
  log_json = json;
}

void log_set_program(const char *name) {
  log_program = name;
}

/* log_put appends raw bytes, marking the record truncated when full (the
 * last 5 bytes are kept free for the closing "...}\n"). */
static void log_put(struct log_rec *r, const char *s, size_t n) {
  if (r->truncated) {
    return; /* everything after the cut is dropped */
  }
  size_t room = r->len < LOG_LINE_MAX - 8 ? LOG_LINE_MAX - 8 - r->len : 0;
  if (n > room) {
    r->truncated = 1;
    /* Short pieces (escapes, quotes) go in whole or not at all, so a cut
     * line is still valid JSON once log_end closes it. */
    n = n <= 8 ? 0 : room;
  }
  memcpy(r->line + r->len, s, n);
  r->len += n;
}

/* log_put_json_string writes s as a JSON string body (RFC 8259 §7). */
static void log_put_json_string(struct log_rec *r, const char *s) {
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      log_put(r, esc, 2);
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      log_put(r, esc, 6);
    } else {
      log_put(r, (const char *)&c, 1);
    }
  }
}

/* log_put_plain_value quotes values with spaces, quotes or control bytes,
 * so a peer cannot forge fields (e.g. a HELO of "x qid=..."). */
static void log_put_plain_value(struct log_rec *r, const char *s) {
  int quote = (*s == '\0');
  for (const char *p = s; *p != '\0'; p++) {
    unsigned char c = (unsigned char)*p;
    if (c <= 0x20 || c == '"' || c == '=' || c == 0x7f || c == '\\') {
      quote = 1;
      break;
    }
  }
  if (!quote) {
    log_put(r, s, strlen(s));
    return;
  }
  log_put(r, "\"", 1);
  log_put_json_string(r, s);
  log_put(r, "\"", 1);
}

/* log_timestamp writes "YYYY-MM-DDTHH:MM:SS.mmmZ" (UTC) and returns its
 * length. The seconds part is formatted once per second per thread: a
 * relay logs a few lines per message, and gmtime+strftime for each was a
 * visible share of its user CPU. */
static size_t log_timestamp(char ts[40]) {
  static __thread time_t cached_sec = -1;
  static __thread char cached[32];
  static __thread size_t cached_len;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  if (tv.tv_sec != cached_sec) {
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    cached_len = strftime(cached, sizeof(cached), "%Y-%m-%dT%H:%M:%S", &tm);
    cached_sec = tv.tv_sec;
  }
  memcpy(ts, cached, cached_len);
  unsigned ms = (unsigned)(tv.tv_usec / 1000);
  char *p = ts + cached_len;
  p[0] = '.';
  p[1] = (char)('0' + ms / 100);
  p[2] = (char)('0' + ms / 10 % 10);
  p[3] = (char)('0' + ms % 10);
  p[4] = 'Z';
  p[5] = '\0';
  return cached_len + 5;
}

void log_begin(struct log_rec *r, const char *event) {
  char ts[40];
  size_t ts_len = log_timestamp(ts);
  r->len = 0;
  r->truncated = 0;
  r->in_string = 0;
  if (log_json) {
    log_put(r, "{\"ts\":\"", 7);
    log_put(r, ts, ts_len);
    log_put(r, "\",\"event\":\"", 11);
    log_put_json_string(r, event);
    log_put(r, "\"", 1);
  } else {
    log_put(r, ts, ts_len);
    log_put(r, " ", 1);
    log_put(r, log_program, strlen(log_program));
    log_put(r, ": event=", 8);
    log_put(r, event, strlen(event));
  }
}

void log_str(struct log_rec *r, const char *key, const char *value) {
  if (value == NULL) {
    value = "";
  }
  if (log_json) {
    log_put(r, ",\"", 2);
    log_put(r, key, strlen(key));
    log_put(r, "\":\"", 3);
    r->in_string = 1;
    log_put_json_string(r, value);
    if (!r->truncated) {
      log_put(r, "\"", 1);
      r->in_string = 0;
    }
  } else {
    log_put(r, " ", 1);
    log_put(r, key, strlen(key));
    log_put(r, "=", 1);
    log_put_plain_value(r, value);
  }
}

/* log_num appends an unquoted number field. */
static void log_num(struct log_rec *r, const char *key, const char *num,
                    size_t num_len) {
  log_put(r, log_json ? ",\"" : " ", log_json ? 2 : 1);
  log_put(r, key, strlen(key));
  log_put(r, log_json ? "\":" : "=", log_json ? 2 : 1);
  log_put(r, num, num_len);
}

/* log_fmt_u64 writes value in decimal at the end of num[24]; returns the
 * first digit (no snprintf: numbers are most of a delivery line). */
static char *log_fmt_u64(char num[24], uint64_t value) {
  char *p = num + 24;
  do {
    *--p = (char)('0' + value % 10);
    value /= 10;
  } while (value != 0);
  return p;
}

void log_u64(struct log_rec *r, const char *key, uint64_t value) {
  char num[24];
  char *p = log_fmt_u64(num, value);
  log_num(r, key, p, (size_t)(num + 24 - p));
}

void log_i64(struct log_rec *r, const char *key, int64_t value) {
  char num[24];
  uint64_t mag = value < 0 ? 0 - (uint64_t)value : (uint64_t)value;
  char *p = log_fmt_u64(num, mag);
  if (value < 0) {
    *--p = '-'; /* 20 digits at most: num[3] is still ours */
  }
  log_num(r, key, p, (size_t)(num + 24 - p));
}

/* log_write_all writes to stderr, retrying short writes and EINTR. */
static void log_write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, p, n);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      return; /* nowhere left to report a logging failure */
    }
    p += w;
    n -= (size_t)w;
  }
}

void log_end(struct log_rec *r) {
  /* LOG_LINE_MAX - 8 bytes at most were used: room for ..."}\n. */
  if (r->truncated) {
    memcpy(r->line + r->len, "...", 3);
    r->len += 3;
  }
  if (log_json) {
    if (r->in_string) {
      r->line[r->len++] = '"';
    }
    r->line[r->len++] = '}';
  }
  r->line[r->len++] = '\n';
  if (log_buf_len + r->len > LOG_THREAD_BUF) {
    log_flush();
  }
  memcpy(log_buf + log_buf_len, r->line, r->len);
  log_buf_len += r->len;
}

void log_flush(void) {
  if (log_buf_len > 0) {
    log_write_all(log_buf, log_buf_len);
    log_buf_len = 0;
  }
}

void log_msg(const char *level, const char *fmt, ...) {
  char text[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof(text), fmt, ap);
  va_end(ap);
  struct log_rec r;
  log_begin(&r, "msg");
  log_str(&r, "level", level);
  log_str(&r, "text", text);
  log_end(&r);
  log_flush();
}
