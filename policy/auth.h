/* policy/auth.h — SMTP AUTH (RFC 4954) credentials: the password file,
 * the password check, failed-attempt limiting per client, and which
 * envelope senders a user may use.
 *
 * Owns: an immutable user table loaded from a file, and a limiter table of
 * recent failures per client network.
 *
 * Password file: one user per line, `#` comments and blank lines skipped
 * (a comment's `#` may follow blanks; an entry may not); LF or CRLF line
 * ends:
 *
 *     user:HASH[:ADDRESSES]
 *
 * user is the SASL authentication id (1..255 octets, each printable ASCII
 * other than `:` or any octet >= 0x80, so UTF-8 names pass; no blanks or
 * controls; often an address, alice@example.com). HASH is a crypt(3)
 * string as `mkpasswd` writes it: yescrypt ($y$), bcrypt ($2b$/$2y$/$2a$,
 * cost 04..31), sha512-crypt ($6$) or sha256-crypt ($5$, rounds
 * 1000..999999999, salt of 1..16 characters), optionally after a Dovecot
 * scheme prefix ({CRYPT}, {BLF-CRYPT}, {SHA512-CRYPT}, {SHA256-CRYPT}; any
 * case; a named prefix must agree with the hash). Plaintext, DES, MD5
 * crypt and every other scheme are refused at load, and so is a hash of
 * an accepted scheme whose shape is wrong (truncated, bad characters).
 * ADDRESSES is a comma list (no blanks) of the envelope senders the user
 * may use: `alice@example.com`, or `@example.com` for a whole domain; the
 * domain is a DNS name, the local part 1..64 octets without quotes. A user
 * whose name is an address (has a non-empty local part and domain around
 * its last `@`) owns that address too. Errors read "FILE:LINE: message"
 * (or "FILE: message" for the file as a whole) and never echo a hash or
 * any field after the user name; a duplicate user's name is echoed. At
 * most AUTH_MAX_USERS users, lines of AUTH_MAX_LINE octets (without the
 * LF), files of AUTH_MAX_FILE octets.
 *
 * User names: the lookup of `user` (auth_db_check, auth_db_may_send_as)
 * is exact on the part before the last `@` (SASL authentication ids are
 * case-sensitive) and ASCII case-insensitive on the domain after it
 * (domains are): "alice@Example.COM" finds "alice@example.com",
 * "Alice@example.com" does not. Two lines whose names are equal under
 * this rule are duplicates.
 *
 * Thread: an auth_db is immutable after auth_db_load() and may be read by
 * any thread; auth_db_check() is slow on purpose (the hash's cost) and is
 * run off the event loops. An auth_limiter is shared by every worker and
 * locks inside. */
#ifndef POSTSEAL_POLICY_AUTH_H
#define POSTSEAL_POLICY_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define AUTH_MAX_USERS 100000
#define AUTH_MAX_LINE 4096
#define AUTH_MAX_FILE (256u << 20) /* octets, comments included */
#define AUTH_MAX_USER_NAME 255
#define AUTH_MAX_ADDRESSES 64 /* per user */
#define AUTH_MAX_PASSWORD 1024
/* The limiter remembers this many failures per client; a larger
 * max_failures acts as this one. */
#define AUTH_LIMITER_MAX_FAILURES 32

struct auth_db;

/* auth_db_load reads the password file. Returns NULL with the reason in
 * err. An empty file is a valid table with no users. */
struct auth_db *auth_db_load(const char *path, char *err, size_t err_len);
/* auth_db_parse is auth_db_load on contents already in memory: text is
 * text_len octets, not NUL-terminated (a NUL octet is an error), and
 * errors begin "NAME:LINE: " with `name` in place of the path. It copies
 * what it keeps. Public for the tests and the fuzz target. */
struct auth_db *auth_db_parse(const char *text, size_t text_len,
                              const char *name, char *err, size_t err_len);
void auth_db_free(struct auth_db *db);
size_t auth_db_num_users(const struct auth_db *db);

/* auth_db_check: 1 if `user` exists and `password` matches its hash, else
 * 0. For an unknown user a hash of the same kind is still computed (the
 * setting most users' hashes share: scheme and cost), so the time taken
 * does not tell which users exist; so is one for a password too long to
 * hash, which never matches: longer than AUTH_MAX_PASSWORD octets, or than
 * the 511 octets libxcrypt hashes (CRYPT_MAX_PASSPHRASE_SIZE - 1; no stored
 * hash can be of a longer one). bcrypt itself reads only the first 72
 * octets. Comparison is constant time. A NULL user or password is a mismatch.
 * Safe to call from several threads at once; each call allocates about 32 KiB
 * of scratch (plus what the scheme itself needs, 16 MiB for default yescrypt).
 */
int auth_db_check(const struct auth_db *db, const char *user,
                  const char *password);

/* auth_db_may_send_as: 1 if `user` may use envelope sender `sender`
 * (mailbox without <>): the user's name itself if it is an address, or
 * one of its ADDRESSES, compared ASCII case-insensitively as a whole;
 * `@domain` entries match any non-empty local part in that domain (the
 * domain being what follows the sender's last `@`). The null sender "" is
 * always allowed (bounces). An unknown user may use nothing else. */
int auth_db_may_send_as(const struct auth_db *db, const char *user,
                        const char *sender);

/* Failed attempts per client: IPv4 by address, IPv6 by /64 (one host
 * usually holds a whole /64); an IPv4-mapped IPv6 address is its IPv4
 * address. Other families (AF_UNIX) and a NULL address share one entry. A
 * client with max_failures failures in the last window_s seconds is
 * refused until the oldest of them ages out (a failure at t counts while
 * now_ms < t + window_s * 1000). max_failures 0 or window_s 0 turns
 * limiting off. Pass the same window_s to every call: auth_limiter_failed
 * uses it to forget clients whose last failure is older than the window.
 * The table holds at most max_entries clients; when full, the least
 * recently failing client is forgotten. Time is passed in (monotonic
 * ms). Memory: about 300 octets per entry, reserved at creation but only
 * touched when used. */
struct auth_limiter;

/* auth_limiter_new returns NULL if max_entries is 0 or too large
 * (>= 2^31), or memory is short. */
struct auth_limiter *auth_limiter_new(size_t max_entries);
void auth_limiter_free(struct auth_limiter *l);

/* auth_limiter_blocked: 1 if the client may not try now. */
int auth_limiter_blocked(struct auth_limiter *l, const struct sockaddr *addr,
                         int64_t now_ms, unsigned max_failures,
                         unsigned window_s);
/* auth_limiter_failed records a failure; auth_limiter_succeeded forgets
 * the client's failures. */
void auth_limiter_failed(struct auth_limiter *l, const struct sockaddr *addr,
                         int64_t now_ms, unsigned window_s);
void auth_limiter_succeeded(struct auth_limiter *l,
                            const struct sockaddr *addr);
/* auth_limiter_refund takes back the client's most recent failure: a
 * caller that counts every attempt as a failure when it starts (so that
 * attempts running at the same time cannot pass the limit together)
 * refunds the ones that succeed, without forgetting older failures (a
 * valid login must not reset guessing at other accounts). */
void auth_limiter_refund(struct auth_limiter *l, const struct sockaddr *addr);
/* auth_limiter_num_clients: how many clients the table holds now (for a
 * gauge, and the tests). */
size_t auth_limiter_num_clients(struct auth_limiter *l);

#endif
