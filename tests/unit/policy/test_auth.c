/* tests/unit/policy/test_auth.c — the password file (parse, errors with
 * line numbers, scheme whitelist), the password check per scheme with real
 * hashes made at test time and literal ones from mkpasswd(1), envelope
 * sender rights, the failure limiter, and a few timings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <crypt.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "policy/auth.h"

/* ---- fixtures ------------------------------------------------------ */

/* Written by `mkpasswd` (whois 5.5.17, Debian 12) for the password
 * "secret"; the first is `mkpasswd -m sha-512 -S saltsalt secret`. */
#define MK_SHA512                                                              \
  "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wi"    \
  "OQSpT0Y77vwPZN.Pq.H91p5hVO1"
#define MK_YESCRYPT                                                            \
  "$y$j9T$K1MQch5kaStVnOrZ7gIBj/$jT1eJMP4NnRHqBW47A.v1hJ/8cFtOWIV2qktVhlvkR3"
#define MK_BCRYPT "$2b$05$CctUIHq0aotVHF/8J/luXemTCPIEW/WzcKMofaB8U571lTCLgAg.6"
#define MK_BCRYPT_2A                                                           \
  "$2a$05$Cc3av6W84A4PcIBJiM9nEuz20XDNWzFG/l5k8PtfC1bDggqijw/JO"
#define MK_SHA256                                                              \
  "$5$rounds=6000$JCEHjToqhYbo6ESe$SP.bBNSR5Dm41f."                            \
  "hknmfzx16GI4fIng1L8RTAU4MjG4"
#define MK_MD5 "$1$6bCFYNTA$f80e4RopJ8bLXiUNQHcng."
#define MK_DES "vccO04XTXwK2U"

/* Hashes made at test time: name, scheme prefix, cost, password. */
struct gen_hash {
  const char *name;
  const char *prefix;
  unsigned long count;
  const char *password;
  char hash[CRYPT_OUTPUT_SIZE];
};

static char long_password[AUTH_MAX_PASSWORD + 2]; /* MAX + 1 octets */

static struct gen_hash gen[] = {
    {"Y", "$y$", 0, "pw-yescrypt", ""},
    {"B", "$2b$", 5, "pw-bcrypt", ""},
    {"B2Y", "$2y$", 5, "pw-bcrypt-2y", ""},
    {"S6", "$6$", 0, "pw-sha512", ""},
    {"S5", "$5$", 0, "pw-sha256", ""},
    {"LONG", "$6$", 1000, NULL /* "<longest>" */, ""},
};
#define NUM_GEN (sizeof(gen) / sizeof(gen[0]))

static const struct {
  const char *name;
  const char *value;
} literals[] = {
    {"MK6", MK_SHA512},     {"MKY", MK_YESCRYPT}, {"MKB", MK_BCRYPT},
    {"MK2A", MK_BCRYPT_2A}, {"MK5", MK_SHA256},
};

/* hash_of returns the hash a {{NAME}} stands for. */
static const char *hash_of(const char *name, size_t name_len) {
  for (size_t i = 0; i < NUM_GEN; i++) {
    if (strlen(gen[i].name) == name_len &&
        memcmp(gen[i].name, name, name_len) == 0) {
      return gen[i].hash;
    }
  }
  for (size_t i = 0; i < sizeof(literals) / sizeof(literals[0]); i++) {
    if (strlen(literals[i].name) == name_len &&
        memcmp(literals[i].name, name, name_len) == 0) {
      return literals[i].value;
    }
  }
  fail_msg("test bug: no hash {{%.*s}}", (int)name_len, name);
  return NULL;
}

/* expand replaces each {{NAME}} in tmpl with that hash. Caller frees. */
static char *expand(const char *tmpl, size_t *out_len) {
  size_t cap = strlen(tmpl) * 2 + 4096;
  char *out = malloc(cap);
  assert_non_null(out);
  size_t len = 0;
  for (const char *s = tmpl; *s != '\0';) {
    const char *open = strstr(s, "{{");
    size_t lit = open ? (size_t)(open - s) : strlen(s);
    assert_true(len + lit < cap);
    memcpy(out + len, s, lit);
    len += lit;
    s += lit;
    if (open == NULL) {
      break;
    }
    const char *close = strstr(open, "}}");
    assert_non_null(close);
    const char *h = hash_of(open + 2, (size_t)(close - open - 2));
    assert_true(len + strlen(h) < cap);
    memcpy(out + len, h, strlen(h));
    len += strlen(h);
    s = close + 2;
  }
  out[len] = '\0';
  if (out_len != NULL) {
    *out_len = len;
  }
  return out;
}

/* case_password expands the long passwords of the tables: "<longest>"
 * is the longest crypt(3) hashes (511 octets), "<crypt+1>" one more,
 * "<max>" AUTH_MAX_PASSWORD octets, "<toolong>" one more; buf holds
 * CRYPT_MAX_PASSPHRASE_SIZE octets. Each is a prefix of long_password. */
static const char *case_password(const char *pw, char *buf) {
  size_t n;
  if (strcmp(pw, "<longest>") == 0) {
    n = CRYPT_MAX_PASSPHRASE_SIZE - 1;
  } else if (strcmp(pw, "<crypt+1>") == 0) {
    n = CRYPT_MAX_PASSPHRASE_SIZE;
  } else if (strcmp(pw, "<max>") == 0) {
    n = AUTH_MAX_PASSWORD;
  } else if (strcmp(pw, "<toolong>") == 0) {
    return long_password;
  } else {
    return pw;
  }
  if (n < CRYPT_MAX_PASSPHRASE_SIZE) {
    memcpy(buf, long_password, n);
    buf[n] = '\0';
    return buf;
  }
  static char max_buf[AUTH_MAX_PASSWORD + 1]; /* single-threaded use only */
  memcpy(max_buf, long_password, n);
  max_buf[n] = '\0';
  return max_buf;
}

static void make_hashes(void) {
  memset(long_password, 'x', AUTH_MAX_PASSWORD + 1);
  long_password[AUTH_MAX_PASSWORD + 1] = '\0';
  struct crypt_data *cd = calloc(1, sizeof(*cd));
  assert_non_null(cd);
  for (size_t i = 0; i < NUM_GEN; i++) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    if (crypt_gensalt_rn(gen[i].prefix, gen[i].count, NULL, 0, setting,
                         sizeof(setting)) == NULL) {
      fail_msg("crypt_gensalt_rn %s failed", gen[i].prefix);
    }
    char buf[CRYPT_MAX_PASSPHRASE_SIZE];
    const char *pw =
        gen[i].password ? gen[i].password : case_password("<longest>", buf);
    const char *h = crypt_rn(pw, setting, cd, sizeof(*cd));
    if (h == NULL) {
      fail_msg("crypt_rn %s failed", setting);
    }
    snprintf(gen[i].hash, sizeof(gen[i].hash), "%s", h);
  }
  free(cd);
}

/* The good file: every scheme, every prefix, comments, blank lines, CRLF,
 * names differing in case, no final newline. */
static const char good_template[] =
    "# postseal test users\n"
    "\n"
    "alice@example.com:{{Y}}:alice.smith@example.com,@alias.example\n"
    "bob:{{B}}:bob@example.org\n"
    "   # an indented comment\n"
    "carol@example.net:{CRYPT}{{S6}}\n"
    "dave:{sha256-crypt}{{S5}}\n"
    "erin@Example.COM:{BLF-CRYPT}{{B2Y}}\r\n"
    "\t\r\n"
    "frank:{SHA512-CRYPT}{{MK6}}:@example.com\n"
    "gina:{{MKY}}\n"
    "hank:{{MKB}}:\n"
    "ivan:{CRYPT}{{MK2A}}\n"
    "judy:{{MK5}}\n"
    "Alice@example.com:{{B}}\n"
    "long:{{LONG}}\n"
    "\xc3\xa9l\xc3\xa8ve@example.com:{{S6}}";
#define GOOD_NUM_USERS 13

static struct auth_db *good_db;

static struct auth_db *parse_or_fail(const char *text, size_t len) {
  char err[512] = "";
  struct auth_db *db = auth_db_parse(text, len, "t", err, sizeof(err));
  if (db == NULL) {
    fail_msg("parse: %s", err);
  }
  return db;
}

static int setup(void **state) {
  (void)state;
  make_hashes();
  size_t len;
  char *text = expand(good_template, &len);
  good_db = parse_or_fail(text, len);
  free(text);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  auth_db_free(good_db);
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the check ----------------------------------------------------- */

struct check_case {
  const char *label;
  const char *user;
  const char *password; /* "<long>" = MAX octets, "<toolong>" = MAX + 1 */
  int want;
};

static const struct check_case check_cases[] = {
    {"yescrypt right", "alice@example.com", "pw-yescrypt", 1},
    {"yescrypt wrong", "alice@example.com", "pw-yescrypT", 0},
    {"bcrypt 2b right", "bob", "pw-bcrypt", 1},
    {"bcrypt 2b wrong", "bob", "pw-bcryp", 0},
    {"bcrypt 2y right, {BLF-CRYPT}", "erin@Example.COM", "pw-bcrypt-2y", 1},
    {"bcrypt 2y wrong", "erin@Example.COM", "pw-bcrypt", 0},
    {"sha512 right, {CRYPT}", "carol@example.net", "pw-sha512", 1},
    {"sha512 wrong", "carol@example.net", "pw-sha512 ", 0},
    {"sha256 right, lower-case prefix", "dave", "pw-sha256", 1},
    {"sha256 wrong", "dave", "", 0},
    {"mkpasswd sha-512 saltsalt right", "frank", "secret", 1},
    {"mkpasswd sha-512 saltsalt wrong", "frank", "Secret", 0},
    {"mkpasswd yescrypt right", "gina", "secret", 1},
    {"mkpasswd yescrypt wrong", "gina", "secret\n", 0},
    {"mkpasswd bcrypt right", "hank", "secret", 1},
    {"mkpasswd bcrypt wrong", "hank", "secre", 0},
    {"mkpasswd bcrypt 2a right", "ivan", "secret", 1},
    {"mkpasswd bcrypt 2a wrong", "ivan", "pw-bcrypt", 0},
    {"mkpasswd sha256 rounds right", "judy", "secret", 1},
    {"mkpasswd sha256 rounds wrong", "judy", "secret2", 0},
    {"utf-8 user", "\xc3\xa9l\xc3\xa8ve@example.com", "pw-sha512", 1},
    /* Names: exact local part, domain in any case. */
    {"domain in other case", "alice@EXAMPLE.com", "pw-yescrypt", 1},
    {"stored domain in other case", "erin@example.com", "pw-bcrypt-2y", 1},
    {"local part is case-sensitive", "Alice@example.com", "pw-yescrypt", 0},
    {"other user of that case", "Alice@example.com", "pw-bcrypt", 1},
    {"bare name is case-sensitive", "BOB", "pw-bcrypt", 0},
    {"no partial name", "alice", "pw-yescrypt", 0},
    /* Unknown users never pass, whatever the password. */
    {"unknown user", "mallory", "pw-bcrypt", 0},
    /* One of these is the password of the hash unknown users meet. */
    {"unknown user, yescrypt password", "mallory@example.com", "pw-yescrypt",
     0},
    {"unknown user, sha512 password", "mallory", "pw-sha512", 0},
    {"unknown user, sha256 password", "mallory", "pw-sha256", 0},
    {"unknown user, bcrypt 2y password", "mallory", "pw-bcrypt-2y", 0},
    {"unknown user, mkpasswd password", "mallory", "secret", 0},
    {"unknown user, longest password", "mallory", "<longest>", 0},
    {"empty user", "", "pw-bcrypt", 0},
    {"user name too long",
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
     "xxxxxxxxxx",
     "pw-bcrypt", 0},
    /* Password length. */
    {"longest password crypt(3) takes", "long", "<longest>", 1},
    {"one octet more", "long", "<crypt+1>", 0},
    {"AUTH_MAX_PASSWORD octets", "long", "<max>", 0},
    {"over AUTH_MAX_PASSWORD", "long", "<toolong>", 0},
};

static void test_check_table(void **state) {
  (void)state;
  char buf[CRYPT_MAX_PASSPHRASE_SIZE];
  for (size_t i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
    const struct check_case *tc = &check_cases[i];
    int got =
        auth_db_check(good_db, tc->user, case_password(tc->password, buf));
    if (got != tc->want) {
      fail_msg("%s: user \"%s\": got %d, want %d", tc->label, tc->user, got,
               tc->want);
    }
  }
}

static void test_check_null_arguments(void **state) {
  (void)state;
  assert_int_equal(auth_db_check(good_db, NULL, "pw-bcrypt"), 0);
  assert_int_equal(auth_db_check(good_db, "bob", NULL), 0);
}

/* The literal is what mkpasswd writes: crypt(3) agrees with it. */
static void test_mkpasswd_literal(void **state) {
  (void)state;
  struct crypt_data *cd = calloc(1, sizeof(*cd));
  assert_non_null(cd);
  const char *h = crypt_rn("secret", "$6$saltsalt", cd, sizeof(*cd));
  assert_non_null(h);
  assert_string_equal(h, MK_SHA512);
  free(cd);
}

static void test_num_users(void **state) {
  (void)state;
  assert_int_equal(auth_db_num_users(good_db), GOOD_NUM_USERS);
}

/* ---- parse errors -------------------------------------------------- */

struct error_case {
  const char *label;
  const char *text;   /* template; {{B}} etc. are hashes */
  const char *want;   /* "t:LINE: ..." prefix of the error */
  const char *secret; /* must not appear in the error (or NULL) */
};

static const struct error_case error_cases[] = {
    {"missing hash", "alice:\n", "t:1: missing password hash", NULL},
    {"missing hash before addresses", "#\nalice::a@b.example\n",
     "t:2: missing password hash", NULL},
    {"no colon", "# c\nalice\n", "t:2: no ':' after the user name", NULL},
    {"line of a bare password", "hunter22\n", "t:1: no ':'", "hunter22"},
    {"plaintext", "alice:hunter22\n",
     "t:1: plaintext or unknown password hashes are refused; accepted: "
     "yescrypt ($y$), bcrypt ($2b$, $2y$, $2a$), sha512-crypt ($6$), "
     "sha256-crypt ($5$)",
     "hunter22"},
    {"{PLAIN}", "alice:{PLAIN}hunter22\n",
     "t:1: password scheme {PLAIN} is refused; accepted: yescrypt", "hunter22"},
    {"{SSHA}", "bob:{{B}}\nalice:{SSHA}c2VjcmV0c2FsdA==\n",
     "t:2: password scheme {SSHA} is refused", "c2VjcmV0"},
    {"unclosed {", "alice:{CRYPT$6$x\n", "t:1: password hash has a malformed",
     "$6$x"},
    {"md5 crypt", "alice:" MK_MD5 "\n",
     "t:1: md5-crypt ($1$) password hashes are refused; accepted: yescrypt",
     "f80e4Rop"},
    {"md5 crypt after {CRYPT}", "alice:{CRYPT}" MK_MD5 "\n",
     "t:1: md5-crypt ($1$) password hashes are refused", "6bCFYNTA"},
    {"des crypt", "alice:" MK_DES "\n", "t:1: des-crypt password hashes",
     MK_DES},
    {"gost-yescrypt", "alice:$gy$j9T$abc$def\n", "t:1: gost-yescrypt", "abc$"},
    {"scrypt", "alice:$7$CU..../....abc$def\n", "t:1: scrypt ($7$)", "abc$"},
    {"prefix disagrees", "alice:{BLF-CRYPT}{{S6}}\n",
     "t:1: scheme prefix does not match the sha512-crypt hash", NULL},
    {"truncated sha512",
     "alice:$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwT\n",
     "t:1: malformed sha512-crypt hash", "TVLlQcbp"},
    {"sha512 salt over 16",
     "alice:$6$0123456789abcdefX$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0"
     "aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1\n",
     "t:1: malformed sha512-crypt hash", "TVLlQcbp"},
    {"sha256 rounds under 1000",
     "alice:$5$rounds=999$JCEHjToqhYbo6ESe$SP.bBNSR5Dm41f.hknmfzx16GI4fIng1L8"
     "RTAU4MjG4\n",
     "t:1: malformed sha256-crypt hash", "SP.bBNSR"},
    {"bcrypt cost 03",
     "alice:$2b$03$CctUIHq0aotVHF/8J/luXemTCPIEW/WzcKMofaB8U571lTCLgAg.6\n",
     "t:1: malformed bcrypt hash", "CctUIHq0"},
    {"yescrypt without checksum", "alice:$y$j9T$K1MQch5kaStVnOrZ7gIBj/\n",
     "t:1: malformed yescrypt hash", "K1MQch5k"},
    {"blank before hash", "alice: {{B}}\n", "t:1: blank in the password hash",
     NULL},
    {"duplicate user", "alice:{{B}}\nbob:{{S6}}\n\nalice:{{S6}}\n",
     "t:4: duplicate user alice (first on line 1)", NULL},
    {"duplicate user, domain case",
     "a@x.example:{{B}}\n# c\na@X.Example:{{B}}\n",
     "t:3: duplicate user a@X.Example (first on line 1)", NULL},
    {"address without @", "alice:{{B}}:not-an-address\n",
     "t:1: address 1 has no '@'", NULL},
    {"passwd-file fields", "alice:{{B}}:1000:1000::/home/alice::\n",
     "t:1: address 1 has no '@'", NULL},
    {"empty address", "alice:{{B}}:a@b.example,,c@d.example\n",
     "t:1: address 2 is empty", NULL},
    {"trailing comma", "alice:{{B}}:a@b.example,\n", "t:1: address 2 is empty",
     NULL},
    {"bad domain", "alice:{{B}}:a@bad_domain.example\n",
     "t:1: address 1 has a bad domain", NULL},
    {"domain with root dot", "alice:{{B}}:a@example.com.\n",
     "t:1: address 1 has a bad domain", NULL},
    {"bare @", "alice:{{B}}:@\n", "t:1: address 1 has a bad domain", NULL},
    {"blank in address", "alice:{{B}}:a@b.example, c@d.example\n",
     "t:1: address 2 has a bad local part", NULL},
    {"quoted local part", "alice:{{B}}:\"a b\"@b.example\n",
     "t:1: address 1 has a bad local part", NULL},
    {"colon in user name splits fields", "ali:ce:{{B}}\n",
     "t:1: plaintext or unknown password hashes are refused", NULL},
    {"empty user", "# users\n:{{B}}\n", "t:2: empty user name", NULL},
    {"blank in user", "al ice:{{B}}\n",
     "t:1: user name has a blank or control octet at 3", NULL},
    {"leading blank", "  alice:{{B}}\n",
     "t:1: user name has a blank or control octet at 1", NULL},
    {"control in user", "al\x01ice:{{B}}\n",
     "t:1: user name has a blank or control octet at 3", NULL},
    {"NUL in line", "alice:{{B}}\nbob\0:{{B}}\n", "t:2: NUL octet in line",
     NULL},
    {"line number after comments, blanks, CRLF", "# x\r\n\r\n\n \t\nbad\n",
     "t:5: no ':'", NULL},
};

/* text_len_of: the template's length, which may hold a NUL. */
static size_t template_len(const struct error_case *tc) {
  if (strcmp(tc->label, "NUL in line") == 0) {
    return sizeof("alice:{{B}}\nbob\0:{{B}}\n") - 1;
  }
  return strlen(tc->text);
}

/* expand_n is expand() for a template that may hold NULs. */
static char *expand_n(const char *tmpl, size_t tmpl_len, size_t *out_len) {
  char *out = malloc(tmpl_len * 2 + 4096);
  assert_non_null(out);
  size_t len = 0;
  for (size_t off = 0; off < tmpl_len;) {
    size_t piece_len;
    char *piece = expand(tmpl + off, &piece_len);
    memcpy(out + len, piece, piece_len);
    len += piece_len;
    free(piece);
    off += strlen(tmpl + off);
    if (off < tmpl_len) {
      out[len++] = '\0';
      off++;
    }
  }
  *out_len = len;
  return out;
}

/* assert_no_hash_echoed fails if err holds a piece of any hash. */
static void assert_no_hash_echoed(const char *label, const char *err) {
  for (size_t i = 0; i < NUM_GEN; i++) {
    const char *h = gen[i].hash;
    const char *tail = h + strlen(h) - 16;
    if (strstr(err, tail) != NULL) {
      fail_msg("%s: error echoes the %s hash: %s", label, gen[i].name, err);
    }
  }
}

static void test_error_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(error_cases) / sizeof(error_cases[0]); i++) {
    const struct error_case *tc = &error_cases[i];
    size_t len;
    char *text = expand_n(tc->text, template_len(tc), &len);
    char err[512];
    memset(err, 0, sizeof(err));
    struct auth_db *db = auth_db_parse(text, len, "t", err, sizeof(err));
    free(text);
    if (db != NULL) {
      auth_db_free(db);
      fail_msg("%s: parsed, want error \"%s\"", tc->label, tc->want);
    }
    if (strncmp(err, tc->want, strlen(tc->want)) != 0) {
      fail_msg("%s:\n got \"%s\"\nwant \"%s...\"", tc->label, err, tc->want);
    }
    if (tc->secret != NULL && strstr(err, tc->secret) != NULL) {
      fail_msg("%s: error echoes \"%s\": %s", tc->label, tc->secret, err);
    }
    assert_no_hash_echoed(tc->label, err);
  }
}

/* Lines of exactly AUTH_MAX_LINE octets pass, one more fails; so does a
 * long line with CRLF counted as its CR. */
static void test_line_limit(void **state) {
  (void)state;
  char *text = malloc(AUTH_MAX_LINE + 128);
  assert_non_null(text);
  text[0] = '#';
  memset(text + 1, 'x', AUTH_MAX_LINE - 1);
  memcpy(text + AUTH_MAX_LINE, "\nbob:" MK_BCRYPT "\n", 6 + 60 + 1);
  struct auth_db *db = parse_or_fail(text, strlen(text));
  assert_int_equal(auth_db_num_users(db), 1);
  auth_db_free(db);

  memmove(text + 1, text, strlen(text) + 1); /* now AUTH_MAX_LINE + 1 */
  char err[256] = "";
  assert_null(auth_db_parse(text, strlen(text), "t", err, sizeof(err)));
  char want[64];
  snprintf(want, sizeof(want), "t:1: line longer than %d octets",
           AUTH_MAX_LINE);
  assert_string_equal(err, want);
  free(text);
}

static void test_user_name_limit(void **state) {
  (void)state;
  char line[AUTH_MAX_USER_NAME + 128];
  memset(line, 'u', AUTH_MAX_USER_NAME);
  snprintf(line + AUTH_MAX_USER_NAME, sizeof(line) - AUTH_MAX_USER_NAME,
           ":%s\n", MK_BCRYPT);
  struct auth_db *db = parse_or_fail(line, strlen(line));
  line[AUTH_MAX_USER_NAME] = '\0';
  assert_int_equal(auth_db_may_send_as(db, line, ""), 1);
  auth_db_free(db);

  memset(line, 'u', AUTH_MAX_USER_NAME + 1);
  snprintf(line + AUTH_MAX_USER_NAME + 1, sizeof(line) - AUTH_MAX_USER_NAME - 1,
           ":%s\n", MK_BCRYPT);
  char err[256] = "";
  assert_null(auth_db_parse(line, strlen(line), "t", err, sizeof(err)));
  assert_string_equal(err, "t:1: user name longer than 255 octets");
}

static void test_address_limit(void **state) {
  (void)state;
  char text[8192];
  size_t n = (size_t)snprintf(text, sizeof(text), "alice:%s:", MK_BCRYPT);
  for (int i = 0; i < AUTH_MAX_ADDRESSES; i++) {
    n += (size_t)snprintf(text + n, sizeof(text) - n, "%sa%d@x.example",
                          i ? "," : "", i);
  }
  struct auth_db *db = parse_or_fail(text, n);
  assert_int_equal(auth_db_may_send_as(db, "alice", "a63@x.example"), 1);
  auth_db_free(db);
  n += (size_t)snprintf(text + n, sizeof(text) - n, ",one-more@x.example");
  char err[256] = "";
  assert_null(auth_db_parse(text, n, "t", err, sizeof(err)));
  assert_string_equal(err, "t:1: more than 64 addresses");
}

static void test_empty_files(void **state) {
  (void)state;
  static const char *const texts[] = {"", "\n", "# only a comment\n",
                                      "\r\n\r\n", "  \t  "};
  for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
    struct auth_db *db = parse_or_fail(texts[i], strlen(texts[i]));
    assert_int_equal(auth_db_num_users(db), 0);
    /* No users: a hash is still computed, and nothing passes. */
    assert_int_equal(auth_db_check(db, "alice", "secret"), 0);
    assert_int_equal(auth_db_may_send_as(db, "alice", "alice@x.example"), 0);
    auth_db_free(db);
  }
  struct auth_db *db = auth_db_parse(NULL, 0, "t", NULL, 0);
  assert_non_null(db);
  auth_db_free(db);
}

/* Every prefix of the good file parses or fails with "t:LINE: ", and no
 * error shows a hash. */
static void test_every_truncation(void **state) {
  (void)state;
  size_t len;
  char *text = expand(good_template, &len);
  for (size_t cut = 0; cut <= len; cut++) {
    char err[512] = "";
    struct auth_db *db = auth_db_parse(text, cut, "t", err, sizeof(err));
    if (db != NULL) {
      auth_db_free(db);
      continue;
    }
    if (strncmp(err, "t:", 2) != 0 || err[2] < '1' || err[2] > '9') {
      fail_msg("cut at %zu: error \"%s\" has no line", cut, err);
    }
    assert_no_hash_echoed("truncation", err);
    for (size_t i = 0; i < sizeof(literals) / sizeof(literals[0]); i++) {
      const char *v = literals[i].value;
      if (strstr(err, v + strlen(v) - 12) != NULL) {
        fail_msg("cut at %zu: error echoes %s: %s", cut, literals[i].name, err);
      }
    }
  }
  free(text);
}

static void test_load_file(void **state) {
  (void)state;
  char path[256];
  const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  snprintf(path, sizeof(path), "%s/test_auth.XXXXXX", dir);
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t len;
  char *text = expand(good_template, &len);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
  free(text);
  char err[512] = "";
  struct auth_db *db = auth_db_load(path, err, sizeof(err));
  if (db == NULL) {
    fail_msg("load: %s", err);
  }
  assert_int_equal(auth_db_num_users(db), GOOD_NUM_USERS);
  assert_int_equal(auth_db_check(db, "hank", "secret"), 1);
  auth_db_free(db);

  /* Errors name the path. */
  fd = open(path, O_WRONLY | O_APPEND);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "\nbob:x\n", 7), 7);
  close(fd);
  assert_null(auth_db_load(path, err, sizeof(err)));
  char want[512];
  snprintf(want, sizeof(want), "%s:18: plaintext or unknown", path);
  if (strncmp(err, want, strlen(want)) != 0) {
    fail_msg("got \"%s\", want \"%s...\"", err, want);
  }
  unlink(path);
  assert_null(auth_db_load(path, err, sizeof(err)));
  snprintf(want, sizeof(want), "%s: No such file or directory", path);
  assert_string_equal(err, want);
  assert_null(auth_db_load(dir, err, sizeof(err)));
  snprintf(want, sizeof(want), "%s: Is a directory", dir);
  assert_string_equal(err, want);
}

/* A full table: 100000 users load and are found; one more is refused. */
static void test_max_users(void **state) {
  (void)state;
  size_t line_max = 32 + 60;
  char *text = malloc((AUTH_MAX_USERS + 1) * line_max);
  assert_non_null(text);
  size_t n = 0;
  for (int i = 0; i < AUTH_MAX_USERS; i++) {
    n += (size_t)sprintf(text + n, "u%d@example.com:%s\n", i, MK_BCRYPT);
  }
  double t0 = now_s();
  struct auth_db *db = parse_or_fail(text, n);
  double t1 = now_s();
  assert_int_equal(auth_db_num_users(db), AUTH_MAX_USERS);
  char name[64];
  double t2 = now_s();
  for (int i = 0; i < AUTH_MAX_USERS; i++) {
    snprintf(name, sizeof(name), "u%d@EXAMPLE.com", i);
    if (auth_db_may_send_as(db, name, name) != 1) {
      fail_msg("user %s not found", name);
    }
  }
  double t3 = now_s();
  assert_int_equal(
      auth_db_may_send_as(db, "u100000@example.com", "u100000@example.com"), 0);
  printf("bench auth_db_parse users=%d ms=%.1f\n", AUTH_MAX_USERS,
         (t1 - t0) * 1e3);
  printf("bench auth_db_may_send_as lookups=%d ns_per_lookup=%.0f\n",
         AUTH_MAX_USERS, (t3 - t2) * 1e9 / AUTH_MAX_USERS);
  auth_db_free(db);

  n += (size_t)sprintf(text + n, "one-more:%s\n", MK_BCRYPT);
  char err[256] = "";
  assert_null(auth_db_parse(text, n, "t", err, sizeof(err)));
  assert_string_equal(err, "t:100001: more than 100000 users");
  free(text);
}

/* ---- senders ------------------------------------------------------- */

struct send_case {
  const char *label;
  const char *user;
  const char *sender;
  int want;
};

static const struct send_case send_cases[] = {
    {"own name", "alice@example.com", "alice@example.com", 1},
    {"own name, other case", "alice@example.com", "ALICE@Example.Com", 1},
    {"listed address", "alice@example.com", "alice.smith@example.com", 1},
    {"listed address, other case", "alice@example.com",
     "Alice.Smith@EXAMPLE.COM", 1},
    {"@domain entry", "alice@example.com", "anything@alias.example", 1},
    {"@domain entry, domain case", "alice@example.com", "x@ALIAS.Example", 1},
    {"@domain entry, quoted local part", "alice@example.com",
     "\"a b\"@alias.example", 1},
    {"@domain is not its subdomain", "alice@example.com", "x@sub.alias.example",
     0},
    {"@domain needs a local part", "alice@example.com", "@alias.example", 0},
    {"other user's address", "alice@example.com", "bob@example.org", 0},
    {"other user's name", "alice@example.com", "carol@example.net", 0},
    {"user found with domain in any case", "alice@EXAMPLE.COM",
     "alice.smith@example.com", 1},
    {"user local part is exact", "Alice@example.com", "alice.smith@example.com",
     0},
    {"that other user's own name", "Alice@example.com", "Alice@example.com", 1},
    {"bare name's listed address", "bob", "bob@example.org", 1},
    {"bare name is not an address", "bob", "bob", 0},
    {"bare name with a domain is not it", "bob", "bob@example.com", 0},
    {"null sender", "bob", "", 1},
    {"null sender, unknown user", "mallory", "", 1},
    {"unknown user", "mallory", "mallory@example.com", 0},
    {"name only, no list", "carol@example.net", "carol@example.net", 1},
    {"name only, same domain", "carol@example.net", "dave@example.net", 0},
    {"stored domain case", "erin@example.com", "erin@example.com", 1},
    {"whole domain", "frank", "alice@example.com", 1},
    {"empty list", "hank", "hank@example.com", 0},
};

static void test_send_as_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(send_cases) / sizeof(send_cases[0]); i++) {
    const struct send_case *tc = &send_cases[i];
    int got = auth_db_may_send_as(good_db, tc->user, tc->sender);
    if (got != tc->want) {
      fail_msg("%s: user \"%s\" sender <%s>: got %d, want %d", tc->label,
               tc->user, tc->sender, got, tc->want);
    }
  }
}

/* ---- threads and timing -------------------------------------------- */

struct thread_arg {
  int id;
  int num_wrong;
};

static void *check_thread(void *p) {
  struct thread_arg *arg = p;
  for (int round = 0; round < 3; round++) {
    for (size_t i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
      /* Threads start at different cases, so different schemes overlap. */
      size_t k = (i + (size_t)arg->id * 7) %
                 (sizeof(check_cases) / sizeof(check_cases[0]));
      const struct check_case *tc = &check_cases[k];
      if (tc->password[0] == '<') {
        continue; /* the long ones share a buffer */
      }
      if (auth_db_check(good_db, tc->user, tc->password) != tc->want) {
        arg->num_wrong++;
      }
    }
  }
  return NULL;
}

static void test_check_threads(void **state) {
  (void)state;
  pthread_t t[4];
  struct thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (struct thread_arg){.id = i, .num_wrong = 0};
    assert_int_equal(pthread_create(&t[i], NULL, check_thread, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    if (args[i].num_wrong != 0) {
      fail_msg("thread %d: %d wrong answers", i, args[i].num_wrong);
    }
  }
}

/* median_check_ms times auth_db_check (median of `runs`). */
static double median_check_ms(const struct auth_db *db, const char *user,
                              const char *pw, int runs) {
  double t[16];
  assert_true(runs <= 16);
  for (int i = 0; i < runs; i++) {
    double t0 = now_s();
    (void)auth_db_check(db, user, pw);
    t[i] = (now_s() - t0) * 1e3;
  }
  for (int i = 1; i < runs; i++) { /* insertion sort */
    for (int j = i; j > 0 && t[j - 1] > t[j]; j--) {
      double x = t[j];
      t[j] = t[j - 1];
      t[j - 1] = x;
    }
  }
  return t[runs / 2];
}

static void test_bench_schemes(void **state) {
  (void)state;
  static const struct {
    const char *scheme;
    const char *user;
    const char *pw;
  } b[] = {
      {"yescrypt_j9T", "alice@example.com", "pw-yescrypt"},
      {"bcrypt_cost5", "bob", "pw-bcrypt"},
      {"bcrypt_cost5_2y", "erin@example.com", "pw-bcrypt-2y"},
      {"sha512crypt_5000", "carol@example.net", "pw-sha512"},
      {"sha256crypt_5000", "dave", "pw-sha256"},
      {"sha256crypt_6000", "judy", "secret"},
      {"unknown_user", "mallory", "secret"},
  };
  for (size_t i = 0; i < sizeof(b) / sizeof(b[0]); i++) {
    printf("bench auth_db_check scheme=%s ms=%.2f\n", b[i].scheme,
           median_check_ms(good_db, b[i].user, b[i].pw, 5));
  }
  /* The default costs, as mkpasswd would use them for new users. */
  static const struct {
    const char *scheme;
    const char *prefix;
  } d[] = {{"bcrypt_default", "$2b$"}, {"yescrypt_default", "$y$"}};
  for (size_t i = 0; i < sizeof(d) / sizeof(d[0]); i++) {
    char setting[CRYPT_GENSALT_OUTPUT_SIZE];
    assert_non_null(
        crypt_gensalt_rn(d[i].prefix, 0, NULL, 0, setting, sizeof(setting)));
    struct crypt_data *cd = calloc(1, sizeof(*cd));
    assert_non_null(cd);
    char line[512];
    snprintf(line, sizeof(line), "u:%s\n",
             crypt_rn("pw", setting, cd, sizeof(*cd)));
    free(cd);
    struct auth_db *db = parse_or_fail(line, strlen(line));
    printf("bench auth_db_check scheme=%s setting=%.7s ms=%.2f\n", d[i].scheme,
           setting, median_check_ms(db, "u", "pw", 3));
    auth_db_free(db);
  }
}

/* An unknown user costs what most users cost: here sha512-crypt 5000
 * rounds, not the first user's far dearer yescrypt. So does a password
 * too long to hash. Runs are interleaved so machine load hits all alike. */
static void test_unknown_user_timing(void **state) {
  (void)state;
  char *text = expand("b:{{Y}}\na:{{S6}}\nc:{{S6}}\nd:{{S6}}\n", NULL);
  struct auth_db *db = parse_or_fail(text, strlen(text));
  free(text);
  double known = 0;
  double unknown = 0;
  double too_long = 0;
  for (int i = 0; i < 9; i++) {
    known += median_check_ms(db, "a", "pw-sha512", 1);
    unknown += median_check_ms(db, "zed", "pw-sha512", 1);
    too_long += median_check_ms(db, "a", long_password, 1);
  }
  double yes = median_check_ms(db, "b", "pw-yescrypt", 3);
  printf("bench timing known_sha512_ms=%.2f unknown_ms=%.2f "
         "too_long_password_ms=%.2f yescrypt_ms=%.2f\n",
         known / 9, unknown / 9, too_long / 9, yes);
  if (unknown > known * 3 || unknown < known / 3) {
    fail_msg("unknown user took %.2f ms, a known one %.2f ms", unknown / 9,
             known / 9);
  }
  if (too_long < known / 3) {
    fail_msg("a too long password took %.2f ms, a fitting one %.2f ms",
             too_long / 9, known / 9);
  }
  auth_db_free(db);
}

/* ---- the limiter --------------------------------------------------- */

static const struct sockaddr *sa_make(struct sockaddr_storage *ss,
                                      const char *ip) {
  memset(ss, 0, sizeof(*ss));
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
  if (inet_pton(AF_INET, ip, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
  } else if (inet_pton(AF_INET6, ip, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
  } else {
    fail_msg("test bug: bad address %s", ip);
  }
  return (const struct sockaddr *)ss;
}

/* A limiter script: each step fails, succeeds or asks, for a client at a
 * time; max_failures 3, window 60 s unless the step says. */
enum step_op { FAIL, SUCCEED, BLOCKED, FREE, CLIENTS };

struct step {
  enum step_op op;
  const char *ip; /* CLIENTS: unused */
  int64_t now_ms; /* CLIENTS: the count wanted */
};

struct limiter_case {
  const char *label;
  size_t max_entries;
  struct step steps[24];
};

#define END                                                                    \
  { CLIENTS, NULL, -1 }

static const struct limiter_case limiter_cases[] = {
    {"blocks at the third failure in the window",
     16,
     {{FREE, "192.0.2.1", 0},
      {FAIL, "192.0.2.1", 0},
      {FAIL, "192.0.2.1", 1000},
      {FREE, "192.0.2.1", 1500},
      {FAIL, "192.0.2.1", 2000},
      {BLOCKED, "192.0.2.1", 2000},
      {BLOCKED, "192.0.2.1", 59999},
      {FREE, "192.0.2.2", 2000},
      END}},
    {"unblocks as the oldest failure ages out",
     16,
     {{FAIL, "192.0.2.1", 0},
      {FAIL, "192.0.2.1", 1000},
      {FAIL, "192.0.2.1", 2000},
      {BLOCKED, "192.0.2.1", 59999},
      {FREE, "192.0.2.1", 60000},
      {FAIL, "192.0.2.1", 61000}, /* 1000, 2000, 61000: 1000 is out */
      {FREE, "192.0.2.1", 61000},
      {FAIL, "192.0.2.1", 61500}, /* 2000, 61000, 61500 */
      {BLOCKED, "192.0.2.1", 61500},
      {BLOCKED, "192.0.2.1", 61999},
      {FREE, "192.0.2.1", 62000},
      END}},
    {"IPv6 /64 shares a counter",
     16,
     {{FAIL, "2001:db8:1:2::1", 0},
      {FAIL, "2001:db8:1:2:ffff::9", 10},
      {FAIL, "2001:db8:1:2:1:2:3:4", 20},
      {BLOCKED, "2001:db8:1:2::77", 30},
      {FREE, "2001:db8:1:3::1", 30},
      {FREE, "2001:db8:1::1", 30},
      {CLIENTS, NULL, 1},
      END}},
    {"IPv4-mapped is IPv4",
     16,
     {{FAIL, "::ffff:192.0.2.7", 0},
      {FAIL, "192.0.2.7", 10},
      {FAIL, "::ffff:192.0.2.7", 20},
      {BLOCKED, "192.0.2.7", 30},
      {BLOCKED, "::ffff:192.0.2.7", 30},
      {FREE, "::ffff:192.0.2.8", 30},
      {FREE, "::192.0.2.7", 30}, /* IPv4-compatible is plain IPv6 */
      END}},
    {"success forgets",
     16,
     {{FAIL, "192.0.2.1", 0},
      {FAIL, "192.0.2.1", 10},
      {FAIL, "192.0.2.1", 20},
      {BLOCKED, "192.0.2.1", 30},
      {SUCCEED, "192.0.2.1", 40},
      {FREE, "192.0.2.1", 50},
      {CLIENTS, NULL, 0},
      {FAIL, "192.0.2.1", 60},
      {FAIL, "192.0.2.1", 70},
      {FREE, "192.0.2.1", 80},
      {SUCCEED, "192.0.2.99", 90}, /* unknown: nothing happens */
      {CLIENTS, NULL, 1},
      END}},
    {"full table forgets the least recently failing",
     2,
     {{FAIL, "192.0.2.1", 0},
      {FAIL, "192.0.2.1", 1},
      {FAIL, "192.0.2.2", 2},
      {FAIL, "192.0.2.2", 3},
      {FAIL, "192.0.2.2", 4},
      {FAIL, "192.0.2.1", 5}, /* .1 now failed last: .2 is oldest */
      {FAIL, "192.0.2.3", 6}, /* evicts .2 */
      {CLIENTS, NULL, 2},
      {FREE, "192.0.2.2", 7},
      {FAIL, "192.0.2.1", 8},
      {BLOCKED, "192.0.2.1", 9},
      END}},
    {"stale clients are dropped on the next failure",
     16,
     {{FAIL, "192.0.2.1", 0},
      {FAIL, "192.0.2.2", 30000},
      {CLIENTS, NULL, 2},
      {FAIL, "192.0.2.3", 60000}, /* .1's last failure is out */
      {CLIENTS, NULL, 2},
      {FAIL, "192.0.2.3", 90000}, /* .2's is out */
      {CLIENTS, NULL, 1},
      END}},
};

static void run_step(const char *label, struct auth_limiter *l, size_t i,
                     const struct step *s) {
  struct sockaddr_storage ss;
  switch (s->op) {
  case FAIL:
    auth_limiter_failed(l, sa_make(&ss, s->ip), s->now_ms, 60);
    break;
  case SUCCEED:
    auth_limiter_succeeded(l, sa_make(&ss, s->ip));
    break;
  case BLOCKED:
  case FREE: {
    int got = auth_limiter_blocked(l, sa_make(&ss, s->ip), s->now_ms, 3, 60);
    int want = s->op == BLOCKED;
    if (got != want) {
      fail_msg("%s: step %zu: %s at %lld ms: got blocked=%d, want %d", label, i,
               s->ip, (long long)s->now_ms, got, want);
    }
    break;
  }
  case CLIENTS:
    if (auth_limiter_num_clients(l) != (size_t)s->now_ms) {
      fail_msg("%s: step %zu: got %zu clients, want %lld", label, i,
               auth_limiter_num_clients(l), (long long)s->now_ms);
    }
    break;
  }
}

static void test_limiter_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof(limiter_cases) / sizeof(limiter_cases[0]);
       i++) {
    const struct limiter_case *tc = &limiter_cases[i];
    struct auth_limiter *l = auth_limiter_new(tc->max_entries);
    assert_non_null(l);
    for (size_t k = 0; !(tc->steps[k].op == CLIENTS && tc->steps[k].now_ms < 0);
         k++) {
      run_step(tc->label, l, k, &tc->steps[k]);
    }
    auth_limiter_free(l);
  }
}

/* Many clients through a small table: it never grows past max_entries,
 * and the newest stay. */
static void test_limiter_bounded(void **state) {
  (void)state;
  struct auth_limiter *l = auth_limiter_new(64);
  assert_non_null(l);
  struct sockaddr_storage ss;
  char ip[64];
  for (int i = 0; i < 10000; i++) {
    snprintf(ip, sizeof(ip), "2001:db8:%x:%x::1", i >> 8, i & 0xff);
    auth_limiter_failed(l, sa_make(&ss, ip), i, 3600);
    assert_true(auth_limiter_num_clients(l) <= 64);
  }
  assert_int_equal(auth_limiter_num_clients(l), 64);
  for (int i = 10000 - 64; i < 10000; i++) {
    snprintf(ip, sizeof(ip), "2001:db8:%x:%x::2", i >> 8, i & 0xff);
    assert_int_equal(auth_limiter_blocked(l, sa_make(&ss, ip), i, 1, 3600), 1);
  }
  snprintf(ip, sizeof(ip), "2001:db8:%x:%x::1", 0, 0);
  assert_int_equal(auth_limiter_blocked(l, sa_make(&ss, ip), 10000, 1, 3600),
                   0);
  auth_limiter_free(l);
}

static void test_limiter_edges(void **state) {
  (void)state;
  assert_null(auth_limiter_new(0));
  struct auth_limiter *l = auth_limiter_new(8);
  assert_non_null(l);
  struct sockaddr_storage ss;
  const struct sockaddr *a = sa_make(&ss, "198.51.100.1");
  for (int i = 0; i < 40; i++) {
    auth_limiter_failed(l, a, i, 60);
  }
  /* Limiting off. */
  assert_int_equal(auth_limiter_blocked(l, a, 40, 0, 60), 0);
  assert_int_equal(auth_limiter_blocked(l, a, 40, 3, 0), 0);
  /* Over the ring's size acts as its size. */
  assert_int_equal(
      auth_limiter_blocked(l, a, 40, AUTH_LIMITER_MAX_FAILURES, 60), 1);
  assert_int_equal(auth_limiter_blocked(l, a, 40, 1000, 60), 1);
  /* Unix-socket and address-less clients share one entry. */
  struct sockaddr_un un = {.sun_family = AF_UNIX, .sun_path = "/run/x"};
  auth_limiter_failed(l, (const struct sockaddr *)&un, 50, 60);
  assert_int_equal(auth_limiter_blocked(l, NULL, 51, 1, 60), 1);
  auth_limiter_succeeded(l, NULL);
  assert_int_equal(
      auth_limiter_blocked(l, (const struct sockaddr *)&un, 52, 1, 60), 0);
  auth_limiter_free(l);
  auth_limiter_free(NULL);
}

struct limiter_thread_arg {
  struct auth_limiter *l;
  int id;
};

static void *limiter_thread(void *p) {
  struct limiter_thread_arg *arg = p;
  struct sockaddr_storage ss;
  char ip[32];
  for (int i = 0; i < 20000; i++) {
    snprintf(ip, sizeof(ip), "10.%d.%d.%d", arg->id, (i >> 8) & 0x3f, i & 0xff);
    const struct sockaddr *a = sa_make(&ss, ip);
    auth_limiter_failed(arg->l, a, i, 10);
    (void)auth_limiter_blocked(arg->l, a, i, 3, 10);
    if (i % 7 == 0) {
      auth_limiter_succeeded(arg->l, a);
    }
  }
  return NULL;
}

/* Reserve-then-refund: attempts counted when they start, the ones that
 * succeed taken back one by one; older failures stay. */
static void test_limiter_refund(void **state) {
  (void)state;
  struct auth_limiter *l = auth_limiter_new(8);
  struct sockaddr_storage ss;
  const struct sockaddr *a = sa_make(&ss, "198.51.100.9");
  auth_limiter_failed(l, a, 1000, 60); /* a real failure */
  auth_limiter_failed(l, a, 1001, 60); /* two attempts in flight */
  auth_limiter_failed(l, a, 1002, 60);
  assert_int_equal(auth_limiter_blocked(l, a, 1003, 3, 60), 1);
  auth_limiter_refund(l, a); /* one of them succeeded */
  assert_int_equal(auth_limiter_blocked(l, a, 1003, 3, 60), 0);
  assert_int_equal(auth_limiter_blocked(l, a, 1003, 2, 60), 1);
  auth_limiter_refund(l, a);
  auth_limiter_refund(l, a);
  assert_int_equal(auth_limiter_num_clients(l), 0); /* all refunded */
  auth_limiter_refund(l, a);                        /* nothing: no-op */
  assert_int_equal(auth_limiter_blocked(l, a, 1003, 1, 60), 0);
  auth_limiter_free(l);
}

static void test_limiter_threads(void **state) {
  (void)state;
  struct auth_limiter *l = auth_limiter_new(1000);
  assert_non_null(l);
  pthread_t t[4];
  struct limiter_thread_arg args[4];
  for (int i = 0; i < 4; i++) {
    args[i] = (struct limiter_thread_arg){.l = l, .id = i};
    assert_int_equal(pthread_create(&t[i], NULL, limiter_thread, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
  }
  assert_true(auth_limiter_num_clients(l) <= 1000);
  auth_limiter_free(l);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mkpasswd_literal),
      cmocka_unit_test(test_num_users),
      cmocka_unit_test(test_check_table),
      cmocka_unit_test(test_check_null_arguments),
      cmocka_unit_test(test_error_table),
      cmocka_unit_test(test_line_limit),
      cmocka_unit_test(test_user_name_limit),
      cmocka_unit_test(test_address_limit),
      cmocka_unit_test(test_empty_files),
      cmocka_unit_test(test_every_truncation),
      cmocka_unit_test(test_load_file),
      cmocka_unit_test(test_max_users),
      cmocka_unit_test(test_send_as_table),
      cmocka_unit_test(test_check_threads),
      cmocka_unit_test(test_unknown_user_timing),
      cmocka_unit_test(test_bench_schemes),
      cmocka_unit_test(test_limiter_table),
      cmocka_unit_test(test_limiter_bounded),
      cmocka_unit_test(test_limiter_edges),
      cmocka_unit_test(test_limiter_refund),
      cmocka_unit_test(test_limiter_threads),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
