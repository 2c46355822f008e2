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
 * DONE (a recipient's final outcome, appended by delivery), HOLD and
 * RELEASE (the operator parks a message and lets it go again; see "Hold
 * state" below).
 *
 * Queue ids: 64-bit, rendered as 16 uppercase hex digits; unique and
 * increasing per thread: 42 bits of milliseconds, 6 bits thread, 16 bits
 * counter (the clock is passed in; after recovery ids start above the
 * largest id found).
 *
 * Reclamation: nothing is ever deleted from a segment; a whole segment is
 * deleted by the repairing scan at start-up (spool_scan with repair) once
 * nothing in it is needed any more (rules at spool_scan below). Sequence
 * numbers: spool_writer_open takes the next one above the largest segment
 * file name of its thread, so the high-water mark is the newest segment
 * itself, which reclamation never deletes (no separate state file).
 *
 * Hold state: a message is held when the winning one of the HOLD/RELEASE
 * records naming its queue id is a HOLD. Each such record carries a
 * generation: whoever writes one writes 1 + the generation it last saw for
 * that message (spool_entry.hold_gen; 0 = no record yet), and the record
 * with the highest generation wins. Ties (only a bug or two writers at
 * once, which the spool lock excludes) go to the record read last: scans
 * read segments in file name order, i.e. by (thread, sequence), and each
 * segment by offset. Scan order alone would not do: a message's records
 * are not all written by one thread (recovery hands a message to worker
 * queue_id % threads, the thread count may change between runs, the
 * offline CLI writes too), and sequence numbers of different threads are
 * unrelated.
 *
 * Lock: one process at a time may write a spool: postseald, or the CLI's
 * offline queue operations while postseald is stopped. Both hold
 * spool_lock() for as long as they may write.
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
#define SPOOL_RECORD_HEADER_LEN 20
#define SPOOL_MAX_RCPTS (1u << 20) /* recipients in one MESSAGE */
#define SPOOL_MAX_STRING 65535u    /* bytes in one envelope string */
#define SPOOL_BATCH_MAX_BYTES                                                  \
  (1u << 30)                      /* a batch holds more only when one          \
                                     record alone is that big */
#define SPOOL_MAX_THREADS 64      /* the 6 thread bits of a queue id */
#define SPOOL_SEGMENT_NAME_MAX 64 /* sizeof spool_entry.segment */

enum spool_record_type {
  SPOOL_REC_SEGMENT = 1, /* first record of a segment: version, thread, seq */
  SPOOL_REC_MESSAGE = 2,
  SPOOL_REC_DONE = 3,
  SPOOL_REC_HOLD = 4,    /* the message is held: not delivered */
  SPOOL_REC_RELEASE = 5, /* the message is released from hold */
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
  int64_t arrival_ms; /* unix time, milliseconds */
  const char *sender; /* "" for <> */
  const char *envid;  /* NULL if none */
  uint8_t ret;        /* enum smtp_ret */
  uint8_t body_type;  /* enum smtp_body_type */
  uint8_t smtputf8;
  uint8_t requiretls;      /* RFC 8689: deliver only over verified TLS */
  const char *client_addr; /* textual IP of the submitting client */
  const char *helo;        /* may be "" */
  size_t num_rcpts;
  struct spool_rcpt *rcpts;
  const uint8_t *body; /* the whole message as stored, Received: first */
  size_t body_len;
};

struct spool_done {
  uint64_t queue_id;
  uint32_t rcpt_index;
  uint8_t outcome; /* enum spool_outcome */
  int64_t when_ms;
};

/* A HOLD or RELEASE record: the hold state of one message changes. */
struct spool_hold {
  uint64_t queue_id;
  uint32_t gen; /* >= 1: 1 + the generation this record overrides */
  uint8_t held; /* 1: HOLD record, 0: RELEASE record */
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

/* spool_record_peek checks the first 12 header bytes at the start of in
 * (magic, type, flags, length; not the checksum) and sets out_record_len to
 * header + payload length. OK, SHORT (fewer than 12 bytes, all plausible) or
 * BAD. Lets a reader learn how many bytes to fetch before decoding. */
enum spool_decode_result spool_record_peek(const uint8_t *in, size_t in_len,
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

/* spool_hold_encode appends a whole HOLD (h->held) or RELEASE record to
 * out. Returns 0, or -1 (errno EINVAL: gen 0 or held not 0/1; ENOMEM) with
 * out unchanged. spool_hold_decode parses the payload of a record of
 * `type` (SPOOL_REC_HOLD or SPOOL_REC_RELEASE). Returns 0, or -1 if the
 * type or the payload is not one. */
int spool_hold_encode(struct buf *out, const struct spool_hold *h);
int spool_hold_decode(uint8_t type, const uint8_t *payload, size_t payload_len,
                      struct spool_hold *out);

/* spool_message_encode_head appends the record header and the envelope part
 * of a MESSAGE record to out, with the checksum already covering m->body,
 * but not the body itself: the record is complete once the m->body_len
 * bytes of m->body follow it (the writer's zero-copy form). Sets
 * out_head_len to the bytes appended. Returns 0, or -1 (errno EINVAL for
 * an invalid message, EMSGSIZE past a limit, ENOMEM) with out unchanged. */
int spool_message_encode_head(struct buf *out, const struct spool_message *m,
                              size_t *out_head_len);

/* The SEGMENT record that opens every segment file. */
struct spool_segment_header {
  uint32_t version; /* SPOOL_SEGMENT_VERSION */
  uint32_t thread_index;
  uint32_t seq;
};
#define SPOOL_SEGMENT_VERSION 1

/* spool_segment_header_encode appends a whole SEGMENT record to out
 * (version SPOOL_SEGMENT_VERSION). Returns 0 or -1. */
int spool_segment_header_encode(struct buf *out, unsigned thread_index,
                                uint32_t seq);
/* spool_segment_header_decode parses a SEGMENT payload. Returns 0, or -1
 * if malformed or of an unknown version. */
int spool_segment_header_decode(const uint8_t *payload, size_t payload_len,
                                struct spool_segment_header *out);
/* spool_segment_name_parse: 1 if name is a segment file name
 * "<thread:2 hex>-<seq:8 hex>.seg" (lowercase), setting out_thread and
 * out_seq; else 0. The writer and reclamation agree through it on which
 * files hold a thread's sequence numbers. */
int spool_segment_name_parse(const char *name, unsigned *out_thread,
                             uint32_t *out_seq);
/* spool_segment_write_header writes the SEGMENT record at offset 0 of fd
 * and fsyncs fd (the caller fsyncs the directory). Returns the bytes
 * written, or -1 with errno. */
long spool_segment_write_header(int fd, unsigned thread_index, uint32_t seq);

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
/* spool_writer_add_hold stages a HOLD or RELEASE record (h->held) in the
 * same group commit as the others (cookie as above). h->gen must be 1 +
 * the message's generation as last seen (see "Hold state"). Returns 0, or
 * -1 (EINVAL, ENOMEM; nothing staged). */
int spool_writer_add_hold(struct spool_writer *w, const struct spool_hold *h,
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
 * done(cookie, err, arg) for every record of the batch, in order, with
 * err = result. The callbacks may stage records (flush_begin returns 0
 * until they are all called) but must not close the writer. After a
 * failure the next batch goes to a new segment: after a failed fdatasync
 * the file's cached state is not trusted. */
void spool_writer_flush_done(struct spool_writer *w, int result,
                             void (*done)(void *cookie, int err, void *arg),
                             void *arg);

/* 1 if a batch is in flight. */
int spool_writer_busy(const struct spool_writer *w);
/* Number of staged (not yet in flight) records. */
size_t spool_writer_staged(const struct spool_writer *w);

/* spool_writer_fail_staged drops every staged record, calling
 * done(cookie, err, arg) for each in order (err a negative errno): for the
 * loop when flush_begin keeps failing (disk full), so sessions get a 4xx. */
void spool_writer_fail_staged(struct spool_writer *w, int err,
                              void (*done)(void *cookie, int err, void *arg),
                              void *arg);

/* spool_writer_sync_flush writes and fdatasyncs every staged record with
 * blocking pwritev/fdatasync, batch by batch, reporting each batch through
 * spool_writer_flush_done. For tests and tools; the daemon uses io_uring.
 * Must not be called while a batch is in flight. Returns 0 when nothing is
 * staged any more, or -1 with errno after the first failed batch (later
 * records stay staged). */
int spool_writer_sync_flush(struct spool_writer *w,
                            void (*done)(void *cookie, int err, void *arg),
                            void *arg);

/* Where the writer appends now: the current segment's file name (under
 * <dir>/seg) and its durable length. For tests and logs. */
const char *spool_writer_segment(const struct spool_writer *w);
uint64_t spool_writer_offset(const struct spool_writer *w);

/* spool_writer_set_segment_target changes the rotation size (default
 * SPOOL_SEGMENT_TARGET_SIZE); tests use a small one. */
void spool_writer_set_segment_target(struct spool_writer *w, uint64_t size);

/* spool_writer_set_prezero makes the writer lay zeros ahead of its
 * records in `chunk`-byte steps (0: off, the default): a batch that passes
 * the zeroed part extends the file with zeros to the next multiple of
 * chunk in the same write (spool_flush.len counts them), so later batches
 * overwrite existing blocks and their fdatasync has no metadata (file
 * size, block allocation) to write: one metadata sync per chunk, not per
 * batch, the way databases pre-fill their logs. Only a batch of at most
 * chunk/16 bytes lays zeros (for large messages the zeros, a copy and a
 * disk write per byte, cost more than the per-batch sync they spare); a
 * bigger one past the zeroed part just grows the file. A scan reads a zero tail
 * as the clean end of a segment (not torn); spool_writer_close and a
 * failed batch cut it off. After a batch fails with ENOSPC while it laid
 * zeros, pre-zeroing turns itself off. Returns 0, or -1 with errno (the
 * zero mapping could not be made). Not while a batch is in flight. */
int spool_writer_set_prezero(struct spool_writer *w, uint64_t chunk);

/* ---- recovery and reading ---- */

/* One queued message found by a scan. */
struct spool_entry {
  uint64_t queue_id;
  int64_t arrival_ms;
  char segment[SPOOL_SEGMENT_NAME_MAX]; /* file name under <dir>/seg */
  uint64_t offset;                      /* of the record */
  uint64_t record_len;
  size_t num_rcpts;
  size_t num_done; /* recipients with a DONE record */
  uint64_t body_len;
  uint32_t hold_gen; /* generation of the winning HOLD/RELEASE; 0: none */
  uint8_t held;      /* 1 if that record is a HOLD */
};

/* One recipient with a DONE record (whatever its outcome). */
struct spool_done_key {
  uint64_t queue_id;
  uint32_t rcpt_index;
};

/* A segment that survived a repairing scan, and its reclamation group:
 * segments of one group hold each other's MESSAGE, DONE and HOLD records
 * and may only be deleted together (see spool_scan), so the daemon can
 * delete a group while it runs once every message in it is finished. */
struct spool_scan_segment {
  char name[SPOOL_SEGMENT_NAME_MAX]; /* file name under <dir>/seg */
  size_t group;                      /* equal for segments of one group */
  uint8_t has_message;               /* holds at least one MESSAGE */
};

struct spool_scan {
  struct spool_entry *entries; /* every MESSAGE kept, sorted by queue id */
  size_t num_entries;
  uint64_t max_queue_id; /* of every record read (MESSAGE, DONE, HOLD,
                            RELEASE), reclaimed ones too: new ids go above */
  size_t num_segments;   /* segment files read, reclaimed ones too */
  size_t num_torn;       /* segments whose tail was torn (not just zeros) */
  size_t num_reclaimed;  /* segments deleted as finished (repair only) */
  struct spool_done_key *dones; /* distinct, sorted; only for entries kept */
  size_t num_dones;
  /* Repair only: every segment file left, sorted by name (NULL, 0 without
   * repair). */
  struct spool_scan_segment *segments;
  size_t num_kept_segments;
};

/* spool_scan reads every segment under <dir>/seg. With `repair`, torn
 * tails are truncated away (the daemon at start-up; never the CLI).
 * Without it the scan opens files read-only and changes nothing, so it may
 * run while postseald appends: a record being written reads as a torn
 * tail, and a segment unlinked after the listing (a starting daemon's
 * reclamation) is skipped. A missing spool directory is an empty spool. Returns
 * 0, or -1 with errno (a message written to `err` of err_len bytes). A
 * segment's valid part ends at its first SHORT or BAD record, or at a record
 * whose payload does not decode; the rest is a torn tail (counted in num_torn;
 * with repair, truncated and fsync'd), unless it is all zeros (a pre-zeroed
 * segment's unused part: not counted; repair cuts it off all the same). A
 * segment without a complete header (empty: created, never synced) is torn and
 * empty; repair removes it. A segment whose first record is valid but not a
 * known SEGMENT header is never touched: the scan fails (EPROTO). Repair also
 * reclaims finished segments: after every segment was read (and nothing
 * failed), the segments are grouped so that a MESSAGE record and every DONE
 * record naming its queue id (and every MESSAGE with the same id) land in one
 * group, transitively. A group is deleted as a whole (unlink, then fsync of
 * <dir>/seg, segment by segment) when
 *   - every MESSAGE in it has a DONE for each of its recipients, and
 *   - none of its segments is the newest surviving segment of its thread
 *     (the writer's sequence high-water mark; see above), and every one has
 *     a segment file name (spool_segment_name_parse); others are not ours
 *     to delete.
 * So a DONE is never deleted while its MESSAGE stays (the recipient would
 * be delivered again), and no DONE survives its MESSAGE (a later message
 * reusing the queue id after a clock step back would inherit it). A DONE
 * naming no MESSAGE found links nothing and goes with its segment.
 * HOLD and RELEASE records link like DONEs: they stay as long as their
 * MESSAGE does (a held message has recipients without a DONE, so it is
 * pending and its group stays; deleting the winning HOLD would release
 * it), and a segment holding only records of finished messages goes.
 * Reclaimed messages and their DONE keys are left out of `out` (counted in
 * num_reclaimed). Hazard: a crash in the middle of deleting a group whose
 * segments hold DONEs for each other's messages may leave a finished
 * MESSAGE without some DONEs; those recipients are delivered again (at
 * least once, never lost).
 * Repair must run before any writer opens on `dir` (it may remove a
 * segment a writer is creating). */
int spool_scan(const char *dir, int repair, struct spool_scan *out, char *err,
               size_t err_len);
void spool_scan_free(struct spool_scan *scan);

/* spool_scan_find returns the first entry with queue_id, or NULL. */
const struct spool_entry *spool_scan_find(const struct spool_scan *scan,
                                          uint64_t queue_id);
/* spool_scan_rcpt_done: 1 if recipient rcpt_index of queue_id has a DONE
 * record, else 0. */
int spool_scan_rcpt_done(const struct spool_scan *scan, uint64_t queue_id,
                         uint32_t rcpt_index);
/* spool_scan_held: 1 if queue_id names a kept entry whose winning
 * HOLD/RELEASE record is a HOLD (see "Hold state"), else 0. */
int spool_scan_held(const struct spool_scan *scan, uint64_t queue_id);

/* spool_read_message loads the record of `entry` into storage (which the
 * caller frees) and decodes it into out. Returns 0 or -1. */
int spool_read_message(const char *dir, const struct spool_entry *entry,
                       struct buf *storage, struct spool_message *out,
                       struct buf *rcpt_storage);

/* ---- lock ---- */

#define SPOOL_LOCK_NAME "lock" /* <dir>/lock */

/* spool_lock takes the spool's writer lock: flock(LOCK_EX | LOCK_NB) on
 * <dir>/lock, creating <dir> (0700) and the file (0600) if missing. Returns
 * 0 with the locked descriptor in *out_fd (O_CLOEXEC; the lock lasts until
 * it is closed), 1 if another open file description holds the lock
 * (postseald runs, or another offline CLI operation), or -1 with errno and
 * a message in err. flock locks belong to the open file description, so a
 * second spool_lock in the same process is busy too. */
int spool_lock(const char *dir, int *out_fd, char *err, size_t err_len);

#endif
