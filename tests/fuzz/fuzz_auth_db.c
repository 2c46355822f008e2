/* tests/fuzz/fuzz_auth_db.c — the password-file parser (auth_db_parse) on
 * arbitrary contents. No password is hashed here (a fuzzed cost could take
 * hours); the parser, the index and the sender rules are what run.
 *
 * Every input must give either a table or a NUL-terminated error that
 * starts "fuzz:". A table must find the first line's user again (a name
 * that is an address may send as itself, in any case of its domain). An
 * error must not echo the hash of the line it names: the HASH field, after
 * any {SCHEME} prefix, when it looks like a crypt string ('$' and 12
 * octets or more: no fixed wording of an error is such a token). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/auth.h"

/* line_at returns the start of 1-based line `line` of data, or NULL. */
static const uint8_t *line_at(const uint8_t *data, size_t size, size_t line,
                              size_t *out_len) {
  const uint8_t *p = data;
  const uint8_t *end = data + size;
  for (size_t i = 1; i < line; i++) {
    p = memchr(p, '\n', (size_t)(end - p));
    if (p == NULL) {
      return NULL;
    }
    p++;
  }
  const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
  *out_len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
  return p;
}

/* check_no_hash_echo aborts if err holds the crypt-looking HASH field of
 * the line it names. */
static void check_no_hash_echo(const uint8_t *data, size_t size,
                               const char *err) {
  char *endp;
  unsigned long line = strtoul(err + strlen("fuzz:"), &endp, 10);
  if (line == 0 || *endp != ':') {
    return; /* an error about the whole file */
  }
  size_t len;
  const uint8_t *p = line_at(data, size, line, &len);
  const uint8_t *colon = p != NULL ? memchr(p, ':', len) : NULL;
  if (colon == NULL) {
    return;
  }
  const uint8_t *hash = colon + 1;
  const uint8_t *hash_end = memchr(hash, ':', len - (size_t)(hash - p));
  size_t hash_len =
      hash_end ? (size_t)(hash_end - hash) : len - (size_t)(hash - p);
  const uint8_t *brace =
      hash_len > 0 && hash[0] == '{' ? memchr(hash, '}', hash_len) : NULL;
  if (brace != NULL) {
    hash_len -= (size_t)(brace + 1 - hash);
    hash = brace + 1;
  }
  if (hash_len < 12 || hash[0] != '$' || memchr(hash, '\0', hash_len)) {
    return;
  }
  if (memmem(err, strlen(err), hash, hash_len) != NULL) {
    fprintf(stderr, "error echoes the hash: \"%s\"\n", err);
    abort();
  }
}

/* check_first_user aborts unless the first line's user, if that line is
 * an entry whose name is an address, may send as that address. */
static void check_first_user(const struct auth_db *db, const uint8_t *data,
                             size_t size) {
  size_t len;
  const uint8_t *p = line_at(data, size, 1, &len);
  const uint8_t *colon = p != NULL ? memchr(p, ':', len) : NULL;
  if (colon == NULL || colon == p || p[0] == '#' || p[0] == ' ' ||
      p[0] == '\t') {
    return;
  }
  char name[AUTH_MAX_USER_NAME + 1];
  size_t n = (size_t)(colon - p);
  if (n > AUTH_MAX_USER_NAME) {
    abort(); /* the parser took an over-long name */
  }
  memcpy(name, p, n);
  name[n] = '\0';
  if (auth_db_may_send_as(db, name, "") != 1) {
    abort();
  }
  const char *at = strrchr(name, '@');
  if (at != NULL && at != name && at[1] != '\0' &&
      auth_db_may_send_as(db, name, name) != 1) {
    fprintf(stderr, "user %s lost\n", name);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[512];
  memset(err, 0x5a, sizeof(err)); /* a missing NUL shows as no match */
  err[sizeof(err) - 1] = '\0';
  struct auth_db *db =
      auth_db_parse((const char *)data, size, "fuzz", err, sizeof(err));
  if (db != NULL) {
    if (auth_db_num_users(db) > AUTH_MAX_USERS) {
      abort();
    }
    check_first_user(db, data, size);
    (void)auth_db_may_send_as(db, "a@b.example", "x@b.example");
    auth_db_free(db);
    return 0;
  }
  if (strncmp(err, "fuzz:", 5) != 0 || strlen(err) < 7) {
    fprintf(stderr, "bad error text: \"%s\"\n", err);
    abort();
  }
  check_no_hash_echo(data, size, err);
  return 0;
}
