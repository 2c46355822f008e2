/* core/queue_archive.h — the queue archive: a portable, versioned file of
 * queued messages (envelope, open recipients, body), written by `postseal
 * queue export` and read by `postseal queue import` and by postseald's
 * IMPORT control command (core/daemon/control.c).
 *
 * Owns: the archive format below, its encoders and its sans-I/O reader.
 * Pure: no I/O, no clock; memory only through the caller's struct buf.
 * Any thread; a struct qarc_reader belongs to one caller. Decoded strings
 * and bodies point into the caller's input, recipients into the caller's
 * rcpt storage: both must outlive the decoded message, and any change to
 * either invalidates it.
 *
 * Format, version 1 (ABNF-ish; integers little-endian):
 *   archive  = header *message end
 *   header   = "postseal-queue-export 1" LF         ; QARC_HEADER, 24 octets
 *   record   = "PQX" type:u8 payload_len:u64 payload checksum:u64
 *              ; checksum: XXH3-64 of the record's octets before it
 *   message  = record of type 'M' (MESSAGE payload below)
 *   end      = record of type 'E', payload num_messages:u64 num_rcpts:u64:
 *              the totals of the messages before it; nothing may follow
 *   MESSAGE payload:
 *     queue_id:u64        ; the id at the source, for logs only
 *     arrival_ms:i64      ; unix time of the first acceptance
 *     flags:u8            ; bit 0 ENVID present, 1 REQUIRETLS, 2 SMTPUTF8,
 *                         ; 3 held; the others 0
 *     ret:u8              ; 0 none, 1 FULL, 2 HDRS (RFC 3461 §4.3)
 *     body_type:u8        ; 0 none, 1 7BIT, 2 8BITMIME (RFC 6152)
 *     reserved:u8         ; 0
 *     str sender          ; "" for <>
 *     [str envid]         ; RFC 3461 §4.4, when flag bit 0
 *     str client_addr     ; who submitted it, for logs
 *     str helo
 *     num_rcpts:u32       ; 1..SPOOL_MAX_RCPTS, only the open recipients
 *     num_rcpts * (rflags:u8 notify:u8 str addr [str orcpt])
 *                         ; rflags bit 0: ORCPT present; notify: the
 *                         ; SMTP_NOTIFY_* bits (RFC 3461 §4.1); addr
 *                         ; not empty
 *     body_len:u64 body   ; the message as stored (Received: on top);
 *                         ; body_len is exactly the rest of the payload
 *   str = len:u16 octet*len NUL  ; no NUL among the octets
 * Every encoding is canonical (reserved bits and octets 0, one way to
 * write each value), so decoding and encoding again gives the same bytes.
 * A reader refuses an archive whose header names another version.
 *
 * Limits: QARC_MAX_PAYLOAD octets of payload per record (the spool's own
 * record limit, so whatever fits the spool fits the archive). */
#ifndef POSTSEAL_CORE_QUEUE_ARCHIVE_H
#define POSTSEAL_CORE_QUEUE_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/spool.h"

#define QARC_HEADER "postseal-queue-export 1\n"
#define QARC_HEADER_LEN (sizeof(QARC_HEADER) - 1)
#define QARC_VERSION 1
#define QARC_RECORD_HEADER_LEN 12 /* "PQX", type, payload_len */
#define QARC_TRAILER_LEN 8        /* the checksum */
#define QARC_MAX_PAYLOAD ((uint64_t)SPOOL_MAX_RECORD)
#define QARC_REC_MESSAGE 'M'
#define QARC_REC_END 'E'
/* Values as proto/smtp_server.h defines them (core may not include it;
 * postseald asserts they agree). */
#define QARC_MAX_RET 2          /* enum smtp_ret */
#define QARC_MAX_BODY_TYPE 2    /* enum smtp_body_type */
#define QARC_NOTIFY_MASK 0x0fu  /* SMTP_NOTIFY_NEVER..SMTP_NOTIFY_DELAY */
#define QARC_END_PAYLOAD_LEN 16 /* num_messages, num_rcpts */

/* One archived message. m.queue_id is the source's id; m.rcpts are the
 * recipients still open there, renumbered from 0. */
struct qarc_message {
  struct spool_message m;
  uint8_t held; /* 1: on hold at the source (e.g. DMARC quarantine) */
};

/* The totals the end record carries. */
struct qarc_end {
  uint64_t num_messages;
  uint64_t num_rcpts;
};

/* ---- writing ---- */

/* qarc_header_encode appends QARC_HEADER. Returns 0 or -1 (ENOMEM). */
int qarc_header_encode(struct buf *out);

/* qarc_message_encode_head appends a MESSAGE record up to and including
 * body_len, but not the body nor the checksum, and writes the checksum
 * (covering m->m.body too) into out_trailer: the record is complete once
 * the m->m.body_len octets of the body and then out_trailer follow it (for
 * a writer that does not copy the body). Returns 0, or -1 with out
 * unchanged: errno EINVAL for a message the format cannot hold (no
 * recipient, a value out of range, a NUL in a string, an empty address),
 * EMSGSIZE past a limit, ENOMEM. */
int qarc_message_encode_head(struct buf *out, const struct qarc_message *m,
                             uint8_t out_trailer[QARC_TRAILER_LEN]);
/* qarc_message_encode appends the whole MESSAGE record. Same returns. */
int qarc_message_encode(struct buf *out, const struct qarc_message *m);
/* qarc_end_encode appends the end record. Returns 0 or -1 (ENOMEM). */
int qarc_end_encode(struct buf *out, const struct qarc_end *e);

/* ---- reading ---- */

enum qarc_result {
  QARC_NEED_MORE, /* *out_need octets from the start of in are needed */
  QARC_MESSAGE,   /* a message was decoded */
  QARC_END,       /* the end record (counts checked): the archive is whole */
  QARC_BAD,       /* invalid; *out_why (or reader->why) says why */
};

/* qarc_record_decode reads one record at the start of in (no archive
 * header): a MESSAGE into out_msg (recipients into rcpt_storage, which the
 * caller frees) or an end record into out_end; *out_consumed is then the
 * record's length. NEED_MORE sets *out_need (> in_len) to the octets the
 * record needs in all, as soon as its header tells; garbage is BAD as
 * early as its first octets show it. BAD sets *out_why to a static
 * one-line reason. */
enum qarc_result qarc_record_decode(const uint8_t *in, size_t in_len,
                                    size_t *out_consumed, size_t *out_need,
                                    struct qarc_message *out_msg,
                                    struct qarc_end *out_end,
                                    struct buf *rcpt_storage,
                                    const char **out_why);

/* A whole archive, fed from its first octet: header, messages, end. */
struct qarc_reader {
  int state;             /* internal: header, records, ended, bad */
  uint64_t num_messages; /* messages decoded so far */
  uint64_t num_rcpts;    /* their recipients */
  const char *why;       /* after QARC_BAD: the reason (static) */
};

void qarc_reader_init(struct qarc_reader *r);

/* qarc_reader_next reads the next item at the start of in (the caller
 * drops *out_consumed octets after each MESSAGE or END and calls again).
 * The header is consumed silently with the first record. Errors are
 * sticky: after BAD every call is BAD; so is anything after END. The BAD
 * message is number r->num_messages + 1. */
enum qarc_result qarc_reader_next(struct qarc_reader *r, const uint8_t *in,
                                  size_t in_len, size_t *out_consumed,
                                  size_t *out_need, struct qarc_message *out,
                                  struct buf *rcpt_storage);

/* qarc_reader_done: 1 if the end record was read (a complete archive). */
int qarc_reader_done(const struct qarc_reader *r);

#endif
