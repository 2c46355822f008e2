/* core/spool.h — the durable message spool: per-thread append-only segments.
 *
 * Owns: the on-disk format (segment files and their records), record
 * encoding/decoding with checksums, the per-thread writer that batches
 * records for group commit, and recovery (scan, torn-tail truncation).
 * Knows no event loop: the writer hands the loop one batch at a time as
 * iovecs + file offset; the loop writes them and fdatasyncs (linked io_uring
 * ops) and reports the result back. A message is acknowledged (250) only
 * after spool_writer_flush_done() reported its batch durable.
 *
 * Layout: <dir>/seg/<thread:2 hex>-<seq:8 hex>.seg. Each segment starts with
 * a segment header record and then records, each:
 *   magic u32 "PSR1" | type u8 | flags u8 | reserved u16 | payload_len u32 |
 *   checksum u64 (XXH3-64 of the 12 header bytes before it + payload) |
 *   payload
 * all integers little-endian. A record whose magic, length or checksum is
 * wrong ends the valid part of a segment (a torn tail from a crash: never an
 * acknowledged record, since those were fdatasync'd before their 250).
 * Record types: MESSAGE (envelope + body stored once for all recipients),
 * DONE (a recipient's final outcome, appended by delivery).
 *
 * Queue ids: 64-bit, rendered as 16 uppercase hex digits; unique and
 * increasing per thread: 42 bits of milliseconds, 6 bits thread, 16 bits
 * counter (the clock is passed in; after recovery ids start above the
 * largest id found).
 *
 * Thread: a spool_writer belongs to one thread. Readers (recovery, the CLI)
 * may run while writers append: they stop at the first incomplete record.
 * Limits: SPOOL_MAX_RECORD payload; SPOOL_BATCH_MAX_IOV iovecs per batch. */
#ifndef POSTSEAL_CORE_SPOOL_H
#define POSTSEAL_CORE_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/buf.h"

#define SPOOL_QUEUE_ID_LEN 16
#define SPOOL_MAX_RECORD (1u << 30)
#define SPOOL_BATCH_MAX_IOV 512
#define SPOOL_SEGMENT_TARGET_SIZE (64u << 20) /* rotate after this */

enum spool_record_type {
  SPOOL_REC_SEGMENT = 1, /* first record of a segment: version, thread, seq */
  SPOOL_REC_MESSAGE = 2,
  SPOOL_REC_DONE = 3,
};

/* Final outcome of one recipient (DONE record). */
enum spool_outcome {
  SPOOL_OUTCOME_DELIVERED = 1,
  SPOOL_OUTCOME_BOUNCED = 2,
  SPOOL_OUTCOME_DELETED = 3, /* removed by the operator */
};

struct spool_rcpt {
  const char *addr;  /* NUL-terminated */
  unsigned notify;   /* SMTP_NOTIFY_* bits, as in proto/smtp_server.h */
  const char *orcpt; /* NULL if none */
};

/* A message as written (pointers owned by the caller) or as decoded
 * (pointers into the decoder's input or a struct spool_message_storage). */
struct spool_message {
  uint64_t queue_id;
  int64_t arrival_ms;      /* unix time, milliseconds */
  const char *sender;      /* "" for <> */
  const char *envid;       /* NULL if none */
  uint8_t ret;             /* enum smtp_ret */
  uint8_t body_type;       /* enum smtp_body_type */
  uint8_t smtputf8;
  const char *client_addr; /* textual IP of the submitting client */
  const char *helo;        /* may be "" */
  size_t num_rcpts;
  struct spool_rcpt *rcpts;
  const uint8_t *body;     /* the whole message as stored, Received: first */
  size_t body_len;
};

struct spool_done {
  uint64_t queue_id;
  uint32_t rcpt_index;
  uint8_t outcome; /* enum spool_outcome */
  int64_t when_ms;
};

/* ---- ids ---- */

/* spool_queue_id_format writes 16 hex digits and a NUL into out (17 bytes). */
void spool_queue_id_format(uint64_t id, char out[SPOOL_QUEUE_ID_LEN + 1]);
/* spool_queue_id_parse: 1 on success (exactly 16 hex digits), 0 otherwise. */
int spool_queue_id_parse(const char *in, uint64_t *out_id);

/* ---- record codec (pure; fuzzed) ---- */

enum spool_decode_result {
  SPOOL_DECODE_OK,
  SPOOL_DECODE_SHORT, /* input ends inside the record (torn tail) */
  SPOOL_DECODE_BAD,   /* magic, length, checksum or payload invalid */
};

/* spool_record_decode reads one record at the start of in. On OK sets
 * out_type, out_payload (pointer into in), out_payload_len and
 * out_record_len (header + payload). */
enum spool_decode_result spool_record_decode(const uint8_t *in, size_t in_len,
                                             uint8_t *out_type,
                                             const uint8_t **out_payload,
                                             size_t *out_payload_len,
                                             size_t *out_record_len);

/* spool_message_decode parses a MESSAGE payload. Strings point into
 * `payload` (which holds them NUL-terminated); the recipient array is
 * allocated into *rcpt_storage (a struct buf the caller frees). Returns 0,
 * or -1 if the payload is malformed. */
int spool_message_decode(const uint8_t *payload, size_t payload_len,
                         struct spool_message *out, struct buf *rcpt_storage);
int spool_done_decode(const uint8_t *payload, size_t payload_len,
                      struct spool_done *out);

/* spool_message_encode appends a whole MESSAGE record (header, payload,
 * body) to out. Used by tests, tools and the fuzzer's round trip; the writer
 * uses the same code but keeps the body out of the copy. Returns 0 or -1. */
int spool_message_encode(struct buf *out, const struct spool_message *m);
int spool_done_encode(struct buf *out, const struct spool_done *d);

/* ---- writer (one per thread) ---- */

struct spool_writer;

/* A batch the loop must write at `offset` of `fd` and then fdatasync. */
struct spool_flush {
  int fd;
  uint64_t offset;
  const struct iovec *iov;
  int num_iov;
  size_t len; /* total bytes */
};

/* spool_writer_open creates <dir>/seg if needed and a new segment for
 * `thread_index` whose sequence number is above any existing one for that
 * thread; the segment header is written and the file and directory
 * fsync'd before it returns. `first_id` is the lowest queue id the writer
 * may hand out (from recovery). Returns NULL and sets errno on failure. */
struct spool_writer *spool_writer_open(const char *dir, unsigned thread_index,
                                       uint64_t first_id);
void spool_writer_close(struct spool_writer *w);

/* spool_writer_new_id returns the next queue id for `now_ms`. */
uint64_t spool_writer_new_id(struct spool_writer *w, int64_t now_ms);

/* spool_writer_add stages a MESSAGE record. m->body must stay valid until
 * the batch holding it is reported by spool_writer_flush_done(). `cookie`
 * is handed back then. Returns 0, or -1 (allocation; nothing staged). */
int spool_writer_add(struct spool_writer *w, const struct spool_message *m,
                     void *cookie);
/* spool_writer_add_done stages a DONE record (cookie as above). */
int spool_writer_add_done(struct spool_writer *w, const struct spool_done *d,
                          void *cookie);

/* spool_writer_flush_begin: if no batch is in flight and records are
 * staged, moves them into the in-flight batch and fills out_flush; returns
 * 1. Returns 0 when there is nothing to do or a batch is in flight, -1 on
 * error (rotation failed: errno set; staged records stay staged). Rotates
 * to a new segment first when the current one passed its target size. */
int spool_writer_flush_begin(struct spool_writer *w,
                             struct spool_flush *out_flush);

/* spool_writer_flush_done: the loop reports the in-flight batch's result:
 * 0 if all bytes were written and fdatasync succeeded, else a negative
 * errno (a short write counts as -ENOSPC). On failure the segment is
 * truncated back so the failed bytes are not replayed. Calls
 * done(cookie, err, arg) for every record of the batch, in order. */
void spool_writer_flush_done(struct spool_writer *w, int result,
                             void (*done)(void *cookie, int err, void *arg),
                             void *arg);

/* 1 if a batch is in flight. */
int spool_writer_busy(const struct spool_writer *w);
/* Number of staged (not yet in flight) records. */
size_t spool_writer_staged(const struct spool_writer *w);

/* ---- recovery and reading ---- */

/* One queued message found by a scan. */
struct spool_entry {
  uint64_t queue_id;
  int64_t arrival_ms;
  char segment[64];   /* file name under <dir>/seg */
  uint64_t offset;    /* of the record */
  uint64_t record_len;
  size_t num_rcpts;
  size_t num_done;    /* recipients with a DONE record */
  uint64_t body_len;
};

struct spool_scan {
  struct spool_entry *entries; /* every MESSAGE found, sorted by queue id */
  size_t num_entries;
  uint64_t max_queue_id;
  size_t num_segments;
  size_t num_torn;      /* segments whose tail was torn */
};

/* spool_scan reads every segment under <dir>/seg. With `repair`, torn
 * tails are truncated away (the daemon at start-up; never the CLI). A
 * missing spool directory is an empty spool. Returns 0, or -1 with errno
 * (a message written to `err` of err_len bytes). */
int spool_scan(const char *dir, int repair, struct spool_scan *out,
               char *err, size_t err_len);
void spool_scan_free(struct spool_scan *scan);

/* spool_read_message loads the record of `entry` into storage (which the
 * caller frees) and decodes it into out. Returns 0 or -1. */
int spool_read_message(const char *dir, const struct spool_entry *entry,
                       struct buf *storage, struct spool_message *out,
                       struct buf *rcpt_storage);

#endif
