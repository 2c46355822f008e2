/* policy/auth.c — the password file, the password check and the failure
 * limiter; see auth.h.
 *
 * The file is read whole into one buffer that the table keeps: fields are
 * cut in place (a NUL over each ':', ',' and line end) and users point
 * into it. Users are found through an open-addressing index (linear
 * probing) keyed by the name as auth.h matches it. */
#include "policy/auth.h"

#include <assert.h>
#include <crypt.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/netaddr.h"

#define AUTH_MAX_LOCAL_PART 64  /* RFC 5321 4.5.3.1.1 */
#define AUTH_MAX_DOMAIN 253     /* RFC 1035 2.3.4, without the root dot */
#define AUTH_MAX_SCHEME_NAME 32 /* a Dovecot {SCHEME} name */
#define AUTH_READ_CHUNK (64u << 10)

#define ACCEPTED_SCHEMES                                                       \
  "accepted: yescrypt ($y$), bcrypt ($2b$, $2y$, $2a$), sha512-crypt ($6$), "  \
  "sha256-crypt ($5$)"

/* The hash an empty table checks unknown users against: default-cost
 * yescrypt of a random password nobody knows. */
static const char dummy_yescrypt[] =
    "$y$j9T$x122acPgRPwEJl4Dimkk40$YbzvETCozO454jmlrPAmg.aVw7VE4f38fszepzTe897";

/* ---- text ---------------------------------------------------------- */

/* A bounded view of the file buffer; nothing reads past len. */
struct span {
  char *p;
  size_t len;
};

/* span_cut splits s at its first `sep`: *out_before gets what precedes
 * it and s keeps what follows. Returns 1, or 0 (s unchanged) if there is
 * no sep. */
static int span_cut(struct span *s, char sep, struct span *out_before) {
  char *at = memchr(s->p, sep, s->len);
  if (at == NULL) {
    return 0;
  }
  out_before->p = s->p;
  out_before->len = (size_t)(at - s->p);
  s->len -= out_before->len + 1;
  s->p = at + 1;
  return 1;
}

static int span_has_prefix(struct span s, const char *prefix) {
  size_t n = strlen(prefix);
  return s.len >= n && memcmp(s.p, prefix, n) == 0;
}

static unsigned char ascii_lower(unsigned char c) {
  return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static int is_digit(unsigned char c) {
  return c >= '0' && c <= '9';
}

/* is_crypt64: the alphabet of crypt(3) salts and checksums. */
static int is_crypt64(unsigned char c) {
  return is_digit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         c == '.' || c == '/';
}

/* crypt64_run counts the leading crypt64 octets of s[0..len). */
static size_t crypt64_run(const char *s, size_t len) {
  size_t i = 0;
  while (i < len && is_crypt64((unsigned char)s[i])) {
    i++;
  }
  return i;
}

/* ---- errors -------------------------------------------------------- */

struct parser {
  const char *name; /* the file's path, or the name given to parse */
  size_t line;      /* 1-based */
  char *err;
  size_t err_len;
};

/* parse_err writes "NAME:LINE: message". Returns -1. */
__attribute__((format(printf, 2, 3))) static int
parse_err(const struct parser *p, const char *fmt, ...) {
  if (p->err == NULL || p->err_len == 0) {
    return -1;
  }
  int n = snprintf(p->err, p->err_len, "%s:%zu: ", p->name, p->line);
  if (n < 0 || (size_t)n >= p->err_len) {
    return -1;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err + n, p->err_len - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

/* file_err writes "NAME: message" for the file as a whole. Returns -1. */
__attribute__((format(printf, 4, 5))) static int
file_err(const char *name, char *err, size_t err_len, const char *fmt, ...) {
  if (err == NULL || err_len == 0) {
    return -1;
  }
  int n = snprintf(err, err_len, "%s: ", name);
  if (n < 0 || (size_t)n >= err_len) {
    return -1;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err + n, err_len - (size_t)n, fmt, ap);
  va_end(ap);
  return -1;
}

/* ---- password hashes ----------------------------------------------- */

enum scheme {
  SCHEME_ANY, /* {CRYPT}: whatever follows */
  SCHEME_YESCRYPT,
  SCHEME_BCRYPT,
  SCHEME_SHA512,
  SCHEME_SHA256,
  SCHEME_NONE, /* not accepted */
};

static const char *const scheme_names[] = {
    [SCHEME_ANY] = "crypt",           [SCHEME_YESCRYPT] = "yescrypt",
    [SCHEME_BCRYPT] = "bcrypt",       [SCHEME_SHA512] = "sha512-crypt",
    [SCHEME_SHA256] = "sha256-crypt", [SCHEME_NONE] = "unknown",
};

static const struct {
  const char *prefix;
  enum scheme scheme;
} crypt_prefixes[] = {
    {"$y$", SCHEME_YESCRYPT}, {"$2b$", SCHEME_BCRYPT}, {"$2y$", SCHEME_BCRYPT},
    {"$2a$", SCHEME_BCRYPT},  {"$6$", SCHEME_SHA512},  {"$5$", SCHEME_SHA256},
};

static const struct {
  const char *name;
  enum scheme scheme;
} dovecot_prefixes[] = {
    {"CRYPT", SCHEME_ANY},
    {"BLF-CRYPT", SCHEME_BCRYPT},
    {"SHA512-CRYPT", SCHEME_SHA512},
    {"SHA256-CRYPT", SCHEME_SHA256},
};

/* Schemes libxcrypt knows that we refuse, named in the error. */
static const struct {
  const char *prefix;
  const char *name;
} refused_prefixes[] = {
    {"$1$", "md5-crypt ($1$)"}, {"$md5", "sun-md5 ($md5)"},
    {"$apr1$", "apr1-md5"},     {"$3$", "NT hash ($3$)"},
    {"$sha1$", "sha1-crypt"},   {"$7$", "scrypt ($7$)"},
    {"$gy$", "gost-yescrypt"},  {"_", "bsdi-des (_)"},
    {"$argon2", "argon2"},      {"$pbkdf2", "pbkdf2"},
};

static enum scheme hash_scheme(struct span h) {
  for (size_t i = 0; i < sizeof(crypt_prefixes) / sizeof(crypt_prefixes[0]);
       i++) {
    if (span_has_prefix(h, crypt_prefixes[i].prefix)) {
      return crypt_prefixes[i].scheme;
    }
  }
  return SCHEME_NONE;
}

/* bcrypt_valid: "$2b$" two-digit cost 04..31 "$" 53 octets (22 of salt,
 * 31 of checksum). */
static int bcrypt_valid(struct span h) {
  if (h.len != 60 || !is_digit((unsigned char)h.p[4]) ||
      !is_digit((unsigned char)h.p[5]) || h.p[6] != '$') {
    return 0;
  }
  int cost = (h.p[4] - '0') * 10 + (h.p[5] - '0');
  return cost >= 4 && cost <= 31 && crypt64_run(h.p + 7, 53) == 53;
}

/* shacrypt_valid: "$6$" ["rounds=" N "$"] salt "$" checksum. A salt over
 * 16 octets or rounds out of range would be rewritten by crypt(3), so the
 * stored hash could never match: refused. */
static int shacrypt_valid(struct span h, size_t sum_len) {
  size_t i = 3;
  if (h.len - i >= 7 && memcmp(h.p + i, "rounds=", 7) == 0) {
    i += 7;
    size_t start = i;
    unsigned long rounds = 0;
    while (i < h.len && i - start < 10 && is_digit((unsigned char)h.p[i])) {
      rounds = rounds * 10 + (unsigned long)(h.p[i] - '0');
      i++;
    }
    if (i - start == 0 || i - start > 9 || h.p[start] == '0' || rounds < 1000 ||
        i >= h.len || h.p[i] != '$') {
      return 0;
    }
    i++;
  }
  size_t salt = crypt64_run(h.p + i, h.len - i);
  if (salt < 1 || salt > 16) {
    return 0;
  }
  i += salt;
  if (i >= h.len || h.p[i] != '$') {
    return 0;
  }
  i++;
  return h.len - i == sum_len && crypt64_run(h.p + i, sum_len) == sum_len;
}

/* yescrypt_valid: "$y$" params "$" salt "$" 43-octet checksum. Whether
 * params decode is left to crypt(3); a bad one never matches. */
static int yescrypt_valid(struct span h) {
  size_t i = 3;
  for (int field = 0; field < 2; field++) {
    size_t n = crypt64_run(h.p + i, h.len - i);
    if (n == 0 || i + n >= h.len || h.p[i + n] != '$') {
      return 0;
    }
    i += n + 1;
  }
  return h.len - i == 43 && crypt64_run(h.p + i, 43) == 43;
}

static int hash_shape_valid(enum scheme s, struct span h) {
  if (h.len >= CRYPT_OUTPUT_SIZE) {
    return 0;
  }
  switch (s) {
  case SCHEME_YESCRYPT:
    return yescrypt_valid(h);
  case SCHEME_BCRYPT:
    return bcrypt_valid(h);
  case SCHEME_SHA512:
    return shacrypt_valid(h, 86);
  case SCHEME_SHA256:
    return shacrypt_valid(h, 43);
  default:
    return 0;
  }
}

/* scheme_name_printable: 1 if a {SCHEME} name is safe to echo (letters,
 * digits, '-', '.', '_'): it names a scheme, it is not a secret. */
static int scheme_name_printable(struct span name) {
  for (size_t i = 0; i < name.len; i++) {
    unsigned char c = (unsigned char)name.p[i];
    if (!is_digit(c) && !(c >= 'A' && c <= 'Z') && !(c >= 'a' && c <= 'z') &&
        c != '-' && c != '.' && c != '_') {
      return 0;
    }
  }
  return 1;
}

/* hash_strip_prefix removes a Dovecot "{SCHEME}" from *hash and says
 * which scheme it promises. Returns 0 or -1 (error written). */
static int hash_strip_prefix(const struct parser *p, struct span *hash,
                             enum scheme *out_want) {
  *out_want = SCHEME_ANY;
  if (hash->len == 0 || hash->p[0] != '{') {
    return 0;
  }
  struct span rest = {hash->p + 1, hash->len - 1};
  struct span name;
  if (!span_cut(&rest, '}', &name) || name.len == 0 ||
      name.len > AUTH_MAX_SCHEME_NAME || !scheme_name_printable(name)) {
    return parse_err(p, "password hash has a malformed {SCHEME} prefix; %s",
                     ACCEPTED_SCHEMES);
  }
  for (size_t i = 0; i < sizeof(dovecot_prefixes) / sizeof(dovecot_prefixes[0]);
       i++) {
    const char *want = dovecot_prefixes[i].name;
    if (strlen(want) == name.len && strncasecmp(name.p, want, name.len) == 0) {
      *out_want = dovecot_prefixes[i].scheme;
      *hash = rest;
      return 0;
    }
  }
  return parse_err(p, "password scheme {%.*s} is refused; %s", (int)name.len,
                   name.p, ACCEPTED_SCHEMES);
}

/* hash_refused writes the error for a hash of no accepted scheme, naming
 * the scheme if it is a known weak one. */
static int hash_refused(const struct parser *p, struct span h) {
  const char *what = "plaintext or unknown";
  for (size_t i = 0; i < sizeof(refused_prefixes) / sizeof(refused_prefixes[0]);
       i++) {
    if (span_has_prefix(h, refused_prefixes[i].prefix)) {
      what = refused_prefixes[i].name;
      break;
    }
  }
  if (h.len == 13 && crypt64_run(h.p, 13) == 13) {
    what = "des-crypt";
  }
  return parse_err(p, "%s password hashes are refused; %s", what,
                   ACCEPTED_SCHEMES);
}

/* hash_check validates the HASH field and strips its prefix. Returns 0 or
 * -1 (error written; the hash itself is never echoed). */
static int hash_check(const struct parser *p, struct span *hash) {
  if (hash->len == 0) {
    return parse_err(p, "missing password hash");
  }
  if (memchr(hash->p, ' ', hash->len) || memchr(hash->p, '\t', hash->len)) {
    return parse_err(p, "blank in the password hash field");
  }
  enum scheme want;
  if (hash_strip_prefix(p, hash, &want) != 0) {
    return -1;
  }
  if (hash->len == 0) {
    return parse_err(p, "missing password hash after the scheme prefix");
  }
  enum scheme got = hash_scheme(*hash);
  if (got == SCHEME_NONE) {
    return hash_refused(p, *hash);
  }
  if (want != SCHEME_ANY && want != got) {
    return parse_err(p, "scheme prefix does not match the %s hash after it",
                     scheme_names[got]);
  }
  if (!hash_shape_valid(got, *hash)) {
    return parse_err(p, "malformed %s hash", scheme_names[got]);
  }
  return 0;
}

/* hash_cost_len: the length of h's scheme and cost ("$y$j9T$", "$2b$05$",
 * "$6$rounds=N$" or "$6$"): hashes agreeing on it take the same time. */
static size_t hash_cost_len(const char *h) {
  if (h[1] == '2') {
    return 7;
  }
  if (h[1] == 'y') {
    return 3 + strcspn(h + 3, "$") + 1;
  }
  if (strncmp(h + 3, "rounds=", 7) == 0) {
    return 3 + strcspn(h + 3, "$") + 1;
  }
  return 3;
}

/* ---- the table ----------------------------------------------------- */

struct auth_user {
  const char *name; /* NUL-terminated, in db->text */
  const char *hash; /* crypt(3) string without {SCHEME}, NUL-terminated */
  uint32_t name_len;
  uint32_t hash_len;
  uint32_t line;
  uint32_t addr_first; /* into db->addrs */
  uint32_t num_addrs;
};

struct auth_db {
  char *text; /* the file, text_len + 1 octets, fields cut in place */
  size_t text_len;
  struct auth_user *users;
  size_t num_users;
  size_t cap_users;
  const char **addrs; /* every user's ADDRESSES, in file order */
  size_t num_addrs;
  size_t cap_addrs;
  uint32_t *slots; /* user index + 1; 0 is empty */
  size_t slot_mask;
  const char *dummy; /* checked for unknown users */
  size_t dummy_len;
};

/* name_fold_from: the offset of name's last '@' (the domain after it is
 * compared without case), or name_len if it has none. */
static size_t name_fold_from(const char *name, size_t name_len) {
  const char *at = memrchr(name, '@', name_len);
  return at == NULL ? name_len : (size_t)(at - name);
}

/* name_hash: FNV-1a over the name as auth.h compares it. The table holds
 * the operator's names only, so probes cannot be steered into long runs
 * by a client. */
static uint64_t name_hash(const char *name, size_t name_len) {
  size_t fold_from = name_fold_from(name, name_len);
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < name_len; i++) {
    unsigned char c = (unsigned char)name[i];
    h ^= i > fold_from ? ascii_lower(c) : c;
    h *= 1099511628211ull;
  }
  return h ^ (h >> 29);
}

/* name_equal: exact before the last '@' (and on the '@'), ASCII
 * case-insensitive after it. */
static int name_equal(const char *a, size_t a_len, const char *b,
                      size_t b_len) {
  if (a_len != b_len) {
    return 0;
  }
  size_t fold_from = name_fold_from(a, a_len);
  size_t exact = fold_from < a_len ? fold_from + 1 : a_len;
  if (memcmp(a, b, exact) != 0) {
    return 0;
  }
  for (size_t i = exact; i < a_len; i++) {
    if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i])) {
      return 0;
    }
  }
  return 1;
}

/* db_find returns the user called `name` (see auth.h), or NULL. */
static const struct auth_user *db_find(const struct auth_db *db,
                                       const char *name) {
  size_t name_len = strnlen(name, AUTH_MAX_USER_NAME + 1);
  if (name_len == 0 || name_len > AUTH_MAX_USER_NAME) {
    return NULL;
  }
  for (size_t i = name_hash(name, name_len) & db->slot_mask;;
       i = (i + 1) & db->slot_mask) {
    uint32_t s = db->slots[i];
    if (s == 0) {
      return NULL;
    }
    const struct auth_user *u = &db->users[s - 1];
    if (name_equal(u->name, u->name_len, name, name_len)) {
      return u;
    }
  }
}

/* db_reserve sizes the user array and index for at most `max_lines`
 * entries (every user takes a line). Returns 0 or -1. */
static int db_reserve(struct auth_db *db, size_t max_lines) {
  db->cap_users = max_lines < AUTH_MAX_USERS ? max_lines : AUTH_MAX_USERS;
  size_t num_slots = 16;
  while (num_slots < 2 * db->cap_users) {
    num_slots *= 2; /* load factor <= 1/2 */
  }
  db->users = calloc(db->cap_users ? db->cap_users : 1, sizeof(*db->users));
  db->slots = calloc(num_slots, sizeof(*db->slots));
  db->slot_mask = num_slots - 1;
  return db->users != NULL && db->slots != NULL ? 0 : -1;
}

/* db_add_user indexes u, refusing a second user of the same name. */
static int db_add_user(struct auth_db *db, const struct parser *p,
                       const struct auth_user *u) {
  if (db->num_users == AUTH_MAX_USERS) {
    return parse_err(p, "more than %d users", AUTH_MAX_USERS);
  }
  assert(db->num_users < db->cap_users);
  for (size_t i = name_hash(u->name, u->name_len) & db->slot_mask;;
       i = (i + 1) & db->slot_mask) {
    uint32_t s = db->slots[i];
    if (s == 0) {
      db->users[db->num_users++] = *u;
      db->slots[i] = (uint32_t)db->num_users;
      return 0;
    }
    const struct auth_user *o = &db->users[s - 1];
    if (name_equal(o->name, o->name_len, u->name, u->name_len)) {
      return parse_err(p, "duplicate user %s (first on line %u)", u->name,
                       (unsigned)o->line);
    }
  }
}

static int db_push_addr(struct auth_db *db, const char *addr) {
  if (db->num_addrs == db->cap_addrs) {
    size_t cap = db->cap_addrs ? db->cap_addrs * 2 : 64;
    const char **grown = reallocarray(db->addrs, cap, sizeof(*grown));
    if (grown == NULL) {
      return -1;
    }
    db->addrs = grown;
    db->cap_addrs = cap;
  }
  db->addrs[db->num_addrs++] = addr;
  return 0;
}

/* db_pick_dummy chooses the hash unknown users are checked against: one
 * whose scheme and cost most users share (Boyer-Moore majority vote, one
 * pass), so a miss costs what a typical hit costs. */
static void db_pick_dummy(struct auth_db *db) {
  if (db->num_users == 0) {
    db->dummy = dummy_yescrypt;
    db->dummy_len = sizeof(dummy_yescrypt) - 1;
    return;
  }
  size_t cand = 0;
  size_t votes = 0;
  for (size_t i = 0; i < db->num_users; i++) {
    const char *c = db->users[cand].hash;
    const char *h = db->users[i].hash;
    size_t c_len = hash_cost_len(c);
    if (votes == 0) {
      cand = i;
      votes = 1;
    } else if (hash_cost_len(h) == c_len && memcmp(c, h, c_len) == 0) {
      votes++;
    } else {
      votes--;
    }
  }
  db->dummy = db->users[cand].hash;
  db->dummy_len = db->users[cand].hash_len;
}

/* ---- lines --------------------------------------------------------- */

/* user_check: 1..255 octets, no blanks, controls or DEL (':' cannot
 * occur: it ends the field). */
static int user_check(const struct parser *p, struct span user) {
  if (user.len == 0) {
    return parse_err(p, "empty user name");
  }
  if (user.len > AUTH_MAX_USER_NAME) {
    return parse_err(p, "user name longer than %d octets", AUTH_MAX_USER_NAME);
  }
  for (size_t i = 0; i < user.len; i++) {
    unsigned char c = (unsigned char)user.p[i];
    if (c <= ' ' || c == 0x7f) {
      return parse_err(p, "user name has a blank or control octet at %zu",
                       i + 1);
    }
  }
  return 0;
}

/* local_part_valid: 1..64 octets of printable ASCII other than the RFC
 * 5322 specials (so no quoting), or UTF-8 (RFC 6531). */
static int local_part_valid(const char *s, size_t len) {
  if (len == 0 || len > AUTH_MAX_LOCAL_PART) {
    return 0;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c <= ' ' || c == 0x7f || strchr("\"(),:;<>@[\\]", c) != NULL) {
      return 0;
    }
  }
  return 1;
}

/* address_check: "local@domain" or "@domain", the domain a DNS name
 * without its root dot. n numbers the address in errors (the address
 * itself is not echoed). */
static int address_check(const struct parser *p, struct span a, size_t n) {
  if (a.len == 0) {
    return parse_err(p, "address %zu is empty", n);
  }
  const char *at = memrchr(a.p, '@', a.len);
  if (at == NULL) {
    return parse_err(p, "address %zu has no '@'", n);
  }
  size_t local_len = (size_t)(at - a.p);
  if (local_len > 0 && !local_part_valid(a.p, local_len)) {
    return parse_err(p, "address %zu has a bad local part", n);
  }
  size_t domain_len = a.len - local_len - 1;
  char domain[AUTH_MAX_DOMAIN + 1];
  if (domain_len == 0 || domain_len > AUTH_MAX_DOMAIN) {
    return parse_err(p, "address %zu has a bad domain", n);
  }
  memcpy(domain, at + 1, domain_len);
  domain[domain_len] = '\0';
  if (domain[domain_len - 1] == '.' || !netaddr_hostname_valid(domain)) {
    return parse_err(p, "address %zu has a bad domain", n);
  }
  return 0;
}

/* addrs_parse reads the ADDRESSES field into db->addrs, cutting it in
 * place, and notes the range in u. */
static int addrs_parse(struct auth_db *db, const struct parser *p,
                       struct span list, struct auth_user *u) {
  u->addr_first = (uint32_t)db->num_addrs;
  u->num_addrs = 0;
  if (list.len == 0) {
    return 0;
  }
  for (;;) {
    struct span a;
    int more = span_cut(&list, ',', &a);
    if (!more) {
      a = list;
    }
    if (u->num_addrs == AUTH_MAX_ADDRESSES) {
      return parse_err(p, "more than %d addresses", AUTH_MAX_ADDRESSES);
    }
    if (address_check(p, a, u->num_addrs + 1) != 0) {
      return -1;
    }
    if (db_push_addr(db, a.p) != 0) {
      return parse_err(p, "out of memory");
    }
    a.p[a.len] = '\0'; /* over the ',' or the line end */
    u->num_addrs++;
    if (!more) {
      return 0;
    }
  }
}

/* line_skipped: 1 for a blank line or a comment. */
static int line_skipped(struct span line) {
  size_t i = 0;
  while (i < line.len && (line.p[i] == ' ' || line.p[i] == '\t')) {
    i++;
  }
  return i == line.len || line.p[i] == '#';
}

/* parse_line reads one line (without its LF) into the table. */
static int parse_line(struct auth_db *db, const struct parser *p,
                      struct span line) {
  if (memchr(line.p, '\0', line.len) != NULL) {
    return parse_err(p, "NUL octet in line");
  }
  if (line.len > 0 && line.p[line.len - 1] == '\r') {
    line.len--;
  }
  if (line_skipped(line)) {
    return 0;
  }
  struct span rest = line;
  struct span user;
  struct span hash;
  if (!span_cut(&rest, ':', &user)) {
    return parse_err(p, "no ':' after the user name");
  }
  if (user_check(p, user) != 0) {
    return -1;
  }
  if (!span_cut(&rest, ':', &hash)) {
    hash = rest;
    rest.len = 0;
  }
  if (hash_check(p, &hash) != 0) {
    return -1;
  }
  struct auth_user u = {.name = user.p,
                        .hash = hash.p,
                        .name_len = (uint32_t)user.len,
                        .hash_len = (uint32_t)hash.len,
                        .line = (uint32_t)p->line};
  if (addrs_parse(db, p, rest, &u) != 0) {
    return -1;
  }
  user.p[user.len] = '\0';
  hash.p[hash.len] = '\0';
  return db_add_user(db, p, &u);
}

/* count_lines: an upper bound on the entries text can hold. */
static size_t count_lines(const char *text, size_t text_len) {
  size_t n = 1;
  for (const char *s = text, *end = text + text_len;
       (s = memchr(s, '\n', (size_t)(end - s))) != NULL; s++) {
    n++;
  }
  return n;
}

/* db_parse_owned parses text (text_len octets and one spare for a NUL),
 * taking ownership of it. */
static struct auth_db *db_parse_owned(char *text, size_t text_len,
                                      const char *name, char *err,
                                      size_t err_len) {
  struct auth_db *db = calloc(1, sizeof(*db));
  if (db == NULL) {
    free(text);
    file_err(name, err, err_len, "out of memory");
    return NULL;
  }
  db->text = text;
  db->text_len = text_len;
  struct parser p = {.name = name, .line = 0, .err = err, .err_len = err_len};
  if (db_reserve(db, count_lines(text, text_len)) != 0) {
    file_err(name, err, err_len, "out of memory");
    auth_db_free(db);
    return NULL;
  }
  for (size_t pos = 0; pos < text_len;) {
    p.line++;
    char *nl = memchr(text + pos, '\n', text_len - pos);
    size_t line_len = nl != NULL ? (size_t)(nl - (text + pos)) : text_len - pos;
    struct span line = {text + pos, line_len};
    pos += line_len + (nl != NULL);
    if (line_len > AUTH_MAX_LINE) {
      parse_err(&p, "line longer than %d octets", AUTH_MAX_LINE);
      auth_db_free(db);
      return NULL;
    }
    if (parse_line(db, &p, line) != 0) {
      auth_db_free(db);
      return NULL;
    }
  }
  db_pick_dummy(db);
  return db;
}

struct auth_db *auth_db_parse(const char *text, size_t text_len,
                              const char *name, char *err, size_t err_len) {
  if (text_len > AUTH_MAX_FILE) {
    file_err(name, err, err_len, "larger than %u octets", AUTH_MAX_FILE);
    return NULL;
  }
  char *copy = malloc(text_len + 1);
  if (copy == NULL) {
    file_err(name, err, err_len, "out of memory");
    return NULL;
  }
  if (text_len > 0) {
    memcpy(copy, text, text_len);
  }
  copy[text_len] = '\0';
  return db_parse_owned(copy, text_len, name, err, err_len);
}

/* read_all reads fd to its end into a new buffer with a spare octet.
 * Returns 0, -1 with errno set, or -2 if it holds over AUTH_MAX_FILE. */
static int read_all(int fd, char **out, size_t *out_len) {
  size_t cap = AUTH_READ_CHUNK;
  size_t len = 0;
  char *buf = malloc(cap);
  if (buf == NULL) {
    return -1;
  }
  for (;;) {
    if (len + 1 == cap) {
      char *grown = realloc(buf, cap * 2);
      if (grown == NULL) {
        free(buf);
        return -1;
      }
      buf = grown;
      cap *= 2;
    }
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0) {
      int saved = errno;
      free(buf);
      errno = saved;
      return -1;
    }
    if (n == 0) {
      break;
    }
    len += (size_t)n;
    if (len > AUTH_MAX_FILE) {
      free(buf);
      return -2;
    }
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  return 0;
}

struct auth_db *auth_db_load(const char *path, char *err, size_t err_len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    file_err(path, err, err_len, "%s", strerror(errno));
    return NULL;
  }
  char *text = NULL;
  size_t text_len = 0;
  int rc = read_all(fd, &text, &text_len);
  int saved = errno;
  close(fd);
  if (rc == -2) {
    file_err(path, err, err_len, "larger than %u octets", AUTH_MAX_FILE);
    return NULL;
  }
  if (rc != 0) {
    file_err(path, err, err_len, "%s", strerror(saved));
    return NULL;
  }
  return db_parse_owned(text, text_len, path, err, err_len);
}

void auth_db_free(struct auth_db *db) {
  if (db == NULL) {
    return;
  }
  if (db->text != NULL) {
    explicit_bzero(db->text, db->text_len + 1); /* the hashes */
  }
  free(db->text);
  free(db->users);
  free(db->addrs);
  free(db->slots);
  free(db);
}

size_t auth_db_num_users(const struct auth_db *db) {
  return db->num_users;
}

/* ---- the check ----------------------------------------------------- */

/* ct_equal compares n octets in time that depends on n only. */
static int ct_equal(const void *a, const void *b, size_t n) {
  const volatile unsigned char *pa = a;
  const volatile unsigned char *pb = b;
  unsigned char diff = 0;
  for (size_t i = 0; i < n; i++) {
    diff |= (unsigned char)(pa[i] ^ pb[i]);
  }
  return diff == 0;
}

int auth_db_check(const struct auth_db *db, const char *user,
                  const char *password) {
  assert(db != NULL);
  const struct auth_user *u = user != NULL ? db_find(db, user) : NULL;
  /* crypt(3) refuses passphrases of CRYPT_MAX_PASSPHRASE_SIZE octets or
   * more at once; those hash "" instead, so they cost the same. */
  size_t pw_len =
      password != NULL ? strnlen(password, AUTH_MAX_PASSWORD + 1) : SIZE_MAX;
  int pw_ok = pw_len <= AUTH_MAX_PASSWORD && pw_len < CRYPT_MAX_PASSPHRASE_SIZE;
  const char *stored = u != NULL ? u->hash : db->dummy;
  size_t stored_len = u != NULL ? u->hash_len : db->dummy_len;
  /* From here on the same work is done whether u and pw_ok hold or not. */
  struct crypt_data *cd = calloc(1, sizeof(*cd));
  if (cd == NULL) {
    return 0;
  }
  const char *out = crypt_rn(pw_ok ? password : "", stored, cd, sizeof(*cd));
  /* stored_len < CRYPT_OUTPUT_SIZE (checked at load), and out lies in
   * cd->output, so both reads stay in bounds; the NUL is compared too. */
  int match = out != NULL && ct_equal(out, stored, stored_len + 1);
  explicit_bzero(cd, sizeof(*cd));
  free(cd);
  return (u != NULL) & pw_ok & match;
}

/* ---- senders ------------------------------------------------------- */

/* address_matches: 1 if sender is entry, or entry is "@domain" and
 * sender is a non-empty local part at that domain. */
static int address_matches(const char *entry, const char *sender) {
  if (entry[0] != '@') {
    return strcasecmp(entry, sender) == 0;
  }
  const char *at = strrchr(sender, '@');
  return at != NULL && at != sender && strcasecmp(at + 1, entry + 1) == 0;
}

/* name_is_address: 1 if the user name has a non-empty local part and
 * domain around its last '@'. */
static int name_is_address(const struct auth_user *u) {
  size_t at = name_fold_from(u->name, u->name_len);
  return at > 0 && at + 1 < u->name_len;
}

int auth_db_may_send_as(const struct auth_db *db, const char *user,
                        const char *sender) {
  assert(db != NULL && user != NULL && sender != NULL);
  if (sender[0] == '\0') {
    return 1; /* RFC 5321 4.5.5: bounces use the null reverse-path */
  }
  const struct auth_user *u = db_find(db, user);
  if (u == NULL) {
    return 0;
  }
  if (name_is_address(u) && strcasecmp(u->name, sender) == 0) {
    return 1;
  }
  for (uint32_t i = 0; i < u->num_addrs; i++) {
    if (address_matches(db->addrs[u->addr_first + i], sender)) {
      return 1;
    }
  }
  return 0;
}

/* ---- the limiter --------------------------------------------------- */

/* Key: a family tag (4, 6, or 0 for anything else) and the IPv4 address
 * or the IPv6 /64, zero-padded. */
#define LIMITER_KEY_LEN 9
#define LIMITER_RING AUTH_LIMITER_MAX_FAILURES
#define LIMITER_MAX_ENTRIES ((size_t)1 << 31)

struct limiter_entry {
  uint8_t key[LIMITER_KEY_LEN];
  uint8_t head;      /* next ring slot to write */
  uint8_t num_times; /* failures held, <= LIMITER_RING */
  uint32_t chain;    /* next entry in the bucket (index + 1; 0 ends) */
  uint32_t newer;    /* recency list by last failure (index + 1) */
  uint32_t older;
  int64_t times[LIMITER_RING]; /* ring of failure times, ms */
};

struct auth_limiter {
  pthread_mutex_t mu;
  struct limiter_entry *entries; /* max_entries, calloc'd: untouched pages
                                    stay unbacked until used */
  size_t max_entries;
  size_t num_touched; /* entries[0..num_touched) have been handed out */
  size_t num_clients;
  uint32_t free_list; /* index + 1, chained through .chain */
  uint32_t *buckets;  /* index + 1 of a chain's first entry */
  size_t bucket_mask;
  uint32_t newest; /* recency list ends (index + 1) */
  uint32_t oldest;
  uint64_t seed; /* random: clients cannot aim at one bucket */
};

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0,    0,
                                            0, 0, 0, 0, 0xff, 0xff};

static void limiter_key(const struct sockaddr *sa,
                        uint8_t out_key[LIMITER_KEY_LEN]) {
  memset(out_key, 0, LIMITER_KEY_LEN);
  if (sa != NULL && sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    out_key[0] = 4;
    memcpy(out_key + 1, &sin->sin_addr, 4);
  } else if (sa != NULL && sa->sa_family == AF_INET6) {
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    if (memcmp(a, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
      out_key[0] = 4;
      memcpy(out_key + 1, a + 12, 4);
    } else {
      out_key[0] = 6;
      memcpy(out_key + 1, a, 8); /* the /64 */
    }
  }
}

static size_t limiter_bucket(const struct auth_limiter *l,
                             const uint8_t key[LIMITER_KEY_LEN]) {
  return (size_t)XXH3_64bits_withSeed(key, LIMITER_KEY_LEN, l->seed) &
         l->bucket_mask;
}

static struct limiter_entry *entry_at(struct auth_limiter *l, uint32_t ref) {
  return &l->entries[ref - 1];
}

/* limiter_find returns the client's entry (index + 1), or 0. */
static uint32_t limiter_find(struct auth_limiter *l,
                             const uint8_t key[LIMITER_KEY_LEN]) {
  uint32_t ref = l->buckets[limiter_bucket(l, key)];
  while (ref != 0 && memcmp(entry_at(l, ref)->key, key, LIMITER_KEY_LEN)) {
    ref = entry_at(l, ref)->chain;
  }
  return ref;
}

static void recency_remove(struct auth_limiter *l, uint32_t ref) {
  struct limiter_entry *e = entry_at(l, ref);
  if (e->newer != 0) {
    entry_at(l, e->newer)->older = e->older;
  } else {
    l->newest = e->older;
  }
  if (e->older != 0) {
    entry_at(l, e->older)->newer = e->newer;
  } else {
    l->oldest = e->newer;
  }
  e->newer = 0;
  e->older = 0;
}

static void recency_push_newest(struct auth_limiter *l, uint32_t ref) {
  struct limiter_entry *e = entry_at(l, ref);
  e->older = l->newest;
  e->newer = 0;
  if (l->newest != 0) {
    entry_at(l, l->newest)->newer = ref;
  } else {
    l->oldest = ref;
  }
  l->newest = ref;
}

/* limiter_forget unlinks an entry from its bucket and the recency list
 * and frees it. */
static void limiter_forget(struct auth_limiter *l, uint32_t ref) {
  struct limiter_entry *e = entry_at(l, ref);
  uint32_t *link = &l->buckets[limiter_bucket(l, e->key)];
  while (*link != ref) {
    assert(*link != 0);
    link = &entry_at(l, *link)->chain;
  }
  *link = e->chain;
  recency_remove(l, ref);
  e->chain = l->free_list;
  l->free_list = ref;
  l->num_clients--;
}

/* limiter_alloc takes a free entry, forgetting the least recently failing
 * client if the table is full. */
static uint32_t limiter_alloc(struct auth_limiter *l) {
  if (l->num_clients == l->max_entries) {
    limiter_forget(l, l->oldest);
  }
  uint32_t ref;
  if (l->free_list != 0) {
    ref = l->free_list;
    l->free_list = entry_at(l, ref)->chain;
  } else {
    assert(l->num_touched < l->max_entries);
    ref = (uint32_t)++l->num_touched;
  }
  memset(entry_at(l, ref), 0, sizeof(struct limiter_entry));
  l->num_clients++;
  return ref;
}

static int64_t entry_last(const struct limiter_entry *e) {
  return e->times[(e->head + LIMITER_RING - 1) % LIMITER_RING];
}

/* limiter_expire forgets clients whose last failure is before cutoff_ms
 * (inclusive): none of their failures counts any more. */
static void limiter_expire(struct auth_limiter *l, int64_t cutoff_ms) {
  while (l->oldest != 0 && entry_last(entry_at(l, l->oldest)) <= cutoff_ms) {
    limiter_forget(l, l->oldest);
  }
}

struct auth_limiter *auth_limiter_new(size_t max_entries) {
  if (max_entries == 0 || max_entries >= LIMITER_MAX_ENTRIES) {
    return NULL;
  }
  struct auth_limiter *l = calloc(1, sizeof(*l));
  if (l == NULL) {
    return NULL;
  }
  size_t num_buckets = 8;
  while (num_buckets < max_entries) {
    num_buckets *= 2;
  }
  l->max_entries = max_entries;
  l->bucket_mask = num_buckets - 1;
  l->entries = calloc(max_entries, sizeof(*l->entries));
  l->buckets = calloc(num_buckets, sizeof(*l->buckets));
  if (l->entries == NULL || l->buckets == NULL ||
      pthread_mutex_init(&l->mu, NULL) != 0) {
    free(l->entries);
    free(l->buckets);
    free(l);
    return NULL;
  }
  if (getrandom(&l->seed, sizeof(l->seed), GRND_NONBLOCK) !=
      (ssize_t)sizeof(l->seed)) {
    l->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)l; /* no pool yet */
  }
  return l;
}

void auth_limiter_free(struct auth_limiter *l) {
  if (l == NULL) {
    return;
  }
  pthread_mutex_destroy(&l->mu);
  free(l->entries);
  free(l->buckets);
  free(l);
}

int auth_limiter_blocked(struct auth_limiter *l, const struct sockaddr *addr,
                         int64_t now_ms, unsigned max_failures,
                         unsigned window_s) {
  if (max_failures == 0 || window_s == 0) {
    return 0;
  }
  unsigned m = max_failures < LIMITER_RING ? max_failures : LIMITER_RING;
  uint8_t key[LIMITER_KEY_LEN];
  limiter_key(addr, key);
  int blocked = 0;
  pthread_mutex_lock(&l->mu);
  uint32_t ref = limiter_find(l, key);
  if (ref != 0 && entry_at(l, ref)->num_times >= m) {
    /* Blocked while the m-th most recent failure is inside the window. */
    const struct limiter_entry *e = entry_at(l, ref);
    int64_t t = e->times[(e->head + LIMITER_RING - m) % LIMITER_RING];
    blocked = now_ms < t + (int64_t)window_s * 1000;
  }
  pthread_mutex_unlock(&l->mu);
  return blocked;
}

void auth_limiter_failed(struct auth_limiter *l, const struct sockaddr *addr,
                         int64_t now_ms, unsigned window_s) {
  uint8_t key[LIMITER_KEY_LEN];
  limiter_key(addr, key);
  pthread_mutex_lock(&l->mu);
  limiter_expire(l, now_ms - (int64_t)window_s * 1000);
  uint32_t ref = limiter_find(l, key);
  if (ref == 0) {
    ref = limiter_alloc(l);
    struct limiter_entry *e = entry_at(l, ref);
    memcpy(e->key, key, LIMITER_KEY_LEN);
    uint32_t *bucket = &l->buckets[limiter_bucket(l, key)];
    e->chain = *bucket;
    *bucket = ref;
  } else {
    recency_remove(l, ref);
  }
  struct limiter_entry *e = entry_at(l, ref);
  e->times[e->head] = now_ms;
  e->head = (uint8_t)((e->head + 1) % LIMITER_RING);
  if (e->num_times < LIMITER_RING) {
    e->num_times++;
  }
  recency_push_newest(l, ref);
  pthread_mutex_unlock(&l->mu);
}

void auth_limiter_succeeded(struct auth_limiter *l,
                            const struct sockaddr *addr) {
  uint8_t key[LIMITER_KEY_LEN];
  limiter_key(addr, key);
  pthread_mutex_lock(&l->mu);
  uint32_t ref = limiter_find(l, key);
  if (ref != 0) {
    limiter_forget(l, ref);
  }
  pthread_mutex_unlock(&l->mu);
}

void auth_limiter_refund(struct auth_limiter *l, const struct sockaddr *addr) {
  uint8_t key[LIMITER_KEY_LEN];
  limiter_key(addr, key);
  pthread_mutex_lock(&l->mu);
  uint32_t ref = limiter_find(l, key);
  if (ref != 0) {
    struct limiter_entry *e = entry_at(l, ref);
    if (e->num_times > 0) {
      e->head = (uint8_t)((e->head + LIMITER_RING - 1) % LIMITER_RING);
      e->num_times--;
    }
    if (e->num_times == 0) {
      limiter_forget(l, ref);
    }
  }
  pthread_mutex_unlock(&l->mu);
}

size_t auth_limiter_num_clients(struct auth_limiter *l) {
  pthread_mutex_lock(&l->mu);
  size_t n = l->num_clients;
  pthread_mutex_unlock(&l->mu);
  return n;
}
