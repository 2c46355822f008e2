/* core/maildir.h — local delivery into a Maildir.
 *
 * Owns nothing between calls: each function works on the caller's strings
 * and buffers and the files it creates. Two steps:
 *
 *   maildir_path_expand()  a per-recipient path from a template, refusing
 *                          addresses that would leave the template's place
 *   maildir_deliver()      one message into one Maildir, durably
 *
 * Maildir conventions (cr.yp.to/proto/maildir.html, as Dovecot and Postfix
 * write them): the message is written to dir/tmp/<name>, fsync'd, renamed
 * to dir/new/<name>, and dir/new is fsync'd, so a message is either wholly
 * in new/ or not there at all. <name> is
 *   <sec>.M<usec>P<pid>Q<n>R<random>.<host>,S=<size>
 * with n a per-process counter, random 64 bits from getrandom(), host the
 * hostname with '/', ':', ',', '\' and non-printables written \ooo (octal,
 * as the Maildir spec asks for '/' and ':'), and size the file's length in
 * octets (Dovecot reads S= as the physical size, which spares it a stat).
 * The file holds "Return-Path: <sender>" and "Delivered-To: rcpt" header
 * lines, then the message with every CRLF made LF (a lone CR stays; the
 * content is otherwise kept octet for octet, no final LF is added).
 *
 * Errors: functions return 0, or a negative class with a reason in err:
 * MAILDIR_TEMPORARY (-1: ENOSPC, EDQUOT, EIO, EROFS, out of memory, a name
 * clash...: the caller defers and retries, 4xx) or MAILDIR_PERMANENT (-2:
 * a path that is not a directory, ENAMETOOLONG, EACCES or EPERM, an
 * envelope with a control octet...: the caller bounces, 5xx). A failed
 * delivery leaves no file in tmp/ or new/.
 *
 * Thread: any thread; both functions are reentrant (the name counter is
 * atomic). maildir_deliver() blocks on disk I/O: it belongs on a
 * local-delivery thread, never on the event loop. It reads the clock.
 * Limits: local part 64 octets, domain 255 (RFC 5321 §4.5.3.1); a name
 * fits in MAILDIR_NAME_MAX octets with its NUL (a longer hostname makes
 * ENAMETOOLONG: permanent). */
#ifndef POSTSEAL_CORE_MAILDIR_H
#define POSTSEAL_CORE_MAILDIR_H

#include <stddef.h>
#include <stdint.h>

#define MAILDIR_TEMPORARY (-1)
#define MAILDIR_PERMANENT (-2)
#define MAILDIR_NAME_MAX 256 /* NAME_MAX + 1 */
#define MAILDIR_MAX_LOCAL 64
#define MAILDIR_MAX_DOMAIN 255

/* Expands a path template for one recipient: %u local part, %d domain
 * (lowercased), %% a percent. Refuses (returns -1, reason in err) a local
 * part or domain that would escape the template: empty, '/', NUL, leading
 * '.', "..", control chars. The address splits at its last '@' (a local
 * part may hold a quoted '@'); with no '@' the domain is empty, so a
 * template with %d refuses it. A part is checked only where the template
 * uses it. Also -1: an unknown %-sequence, a result that does not fit
 * out_len. (A NUL cannot reach here: rcpt_addr is a C string.) */
int maildir_path_expand(const char *tmpl, const char *rcpt_addr, char *out,
                        size_t out_len, char *err, size_t err_len);

struct maildir_delivery {
  const char *dir;          /* the Maildir root; dir, dir/tmp, dir/new, dir/cur
                               created (0700) as needed, parents too */
  const char *return_path;  /* envelope sender, "" for <> ; written as
                               Return-Path: <...> */
  const char *delivered_to; /* the recipient; Delivered-To: header */
  const uint8_t *body;      /* the message as spooled (CRLF line ends) */
  size_t body_len;
  const char *hostname; /* for the unique name; NULL or "": "localhost" */
};

/* Writes the message into dir/tmp under a unique name (see above), with
 * line ends converted to LF, fsyncs the file, renames it into dir/new,
 * fsyncs dir/new. Returns 0 (the file's name within new/ in out_name,
 * which must hold MAILDIR_NAME_MAX octets; out_name may be NULL),
 * MAILDIR_TEMPORARY (ENOSPC, EIO, EDQUOT...: the caller retries) or
 * MAILDIR_PERMANENT (the path is not a directory, ENAMETOOLONG, EACCES
 * on an existing dir, a control octet in return_path or delivered_to, an
 * out_len below the name's length...). Blocking: meant for a
 * local-delivery thread, never the event loop. On any failure the tmp
 * file is removed (and the new/ file, if fsyncing new/ failed: the caller
 * will deliver again). Thread-safe (the Q counter is atomic). */
int maildir_deliver(const struct maildir_delivery *d, char *out_name,
                    size_t out_len, char *err, size_t err_len);

/* Fault injection for tests (SQLite style): the next time the named step
 * runs it fails with errno err instead (once; 0 disarms). Process-wide:
 * for single-threaded tests only. */
enum maildir_fault {
  MAILDIR_FAULT_NONE,
  MAILDIR_FAULT_OPEN,      /* creating the tmp file */
  MAILDIR_FAULT_WRITE,     /* writing it */
  MAILDIR_FAULT_FSYNC,     /* fsyncing it */
  MAILDIR_FAULT_RENAME,    /* tmp/ to new/ */
  MAILDIR_FAULT_FSYNC_DIR, /* fsyncing new/ */
};
void maildir_fault_set(enum maildir_fault step, int err);

#endif
