/* tests/unit/core/test_maildir.c — Maildir path templates and delivery:
 * hostile addresses refused, files where Maildir readers look for them,
 * byte-exact content and size, unique names across threads, failures
 * (injected and real) leaving nothing behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/maildir.h"

/* ---- path templates ------------------------------------------------------ */

struct expand_case {
  const char *label;
  const char *tmpl, *addr;
  int want_rc;
  const char *want; /* the path, or a word of the reason */
};

static void test_expand(void **state) {
  static const char long_local[] =
      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@x";
  static const struct expand_case cases[] = {
      {"local and domain", "/var/mail/%d/%u/", "Bob@Example.COM", 0,
       "/var/mail/example.com/Bob/"},
      {"percent", "/m/100%%/%u", "a@b", 0, "/m/100%/a"},
      {"no placeholders", "/m/all", "a@b", 0, "/m/all"},
      {"quoted @ in local part", "/m/%d/%u", "\"a@b\"@c.example", 0,
       "/m/c.example/\"a@b\""},
      {"utf-8 local part", "/m/%u", "j\xc3\xb6rg@x", 0, "/m/j\xc3\xb6rg"},
      {"no domain, %u only", "/m/%u", "postmaster", 0, "/m/postmaster"},
      {"bad domain unused", "/m/%u", "a@../../etc", 0, "/m/a"},
      {"dot inside", "/m/%u", "first.last@x", 0, "/m/first.last"},
      {"no domain, %d", "/m/%d/%u", "postmaster", -1, "empty domain"},
      {"empty local", "/m/%u", "@x", -1, "empty local part"},
      {"empty domain", "/m/%d", "a@", -1, "empty domain"},
      {"dotdot local", "/m/%u", "..@x", -1, "starts with a dot"},
      {"dot local", "/m/%u", ".@x", -1, "starts with a dot"},
      {"hidden local", "/m/%u", ".profile@x", -1, "starts with a dot"},
      {"dotdot inside", "/m/%u", "a..b@x", -1, "\"..\""},
      {"slash local", "/m/%u", "a/../../b@x", -1, "'/'"},
      {"slash domain", "/m/%d", "a@x/y", -1, "'/'"},
      {"dotdot domain", "/m/%d", "a@..", -1, "starts with a dot"},
      {"domain dotdot inside", "/m/%d", "a@x..y", -1, "\"..\""},
      {"CRLF local", "/m/%u", "a\r\nb@x", -1, "control"},
      {"tab domain", "/m/%d", "a@x\ty", -1, "control"},
      {"DEL local", "/m/%u", "a\x7f@x", -1, "control"},
      {"local too long", "/m/%u", long_local, -1, "too long"},
      {"unknown sequence", "/m/%x", "a@b", -1, "unknown"},
      {"lone percent at the end", "/m/%", "a@b", -1, "unknown"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct expand_case *c = &cases[i];
    char out[256] = "junk", err[256] = "";
    int rc = maildir_path_expand(c->tmpl, c->addr, out, sizeof(out), err,
                                 sizeof(err));
    if (rc != c->want_rc) {
      fail_msg("%s: rc got %d want %d (out \"%s\", err \"%s\")", c->label, rc,
               c->want_rc, out, err);
    }
    if (rc == 0 && strcmp(out, c->want) != 0) {
      fail_msg("%s: path got \"%s\" want \"%s\"", c->label, out, c->want);
    }
    if (rc != 0 && (strstr(err, c->want) == NULL || out[0] != '\0')) {
      fail_msg("%s: err got \"%s\" want \"%s\", out \"%s\" want empty",
               c->label, err, c->want, out);
    }
  }
}

static void test_expand_limits(void **state) {
  char out[16], err[128];
  /* exactly fits: 15 octets and the NUL */
  assert_int_equal(maildir_path_expand("/m/%u", "abcdefghijkl@x", out,
                                       sizeof(out), err, sizeof(err)),
                   0);
  assert_string_equal(out, "/m/abcdefghijkl");
  assert_int_equal(maildir_path_expand("/m/%u", "abcdefghijklm@x", out,
                                       sizeof(out), err, sizeof(err)),
                   -1);
  assert_non_null(strstr(err, "longer than 15"));
  assert_string_equal(out, "");
  /* a 256-octet domain */
  char addr[300] = "a@";
  memset(addr + 2, 'd', 256);
  addr[258] = '\0';
  char big[512];
  assert_int_equal(
      maildir_path_expand("/m/%d", addr, big, sizeof(big), err, sizeof(err)),
      -1);
  assert_non_null(strstr(err, "domain too long"));
  /* err may be NULL */
  assert_int_equal(
      maildir_path_expand("/m/%u", "@x", out, sizeof(out), NULL, 0), -1);
}

/* ---- delivery ------------------------------------------------------------ */

struct tmpdir {
  char root[64];
};

static void tmpdir_make(struct tmpdir *t) {
  strcpy(t->root, "/tmp/postseal-maildir-XXXXXX");
  assert_non_null(mkdtemp(t->root));
}

static void rm_rf(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0) {
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    chmod(path, 0700);
    DIR *d = opendir(path);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
        continue;
      }
      char sub[1024];
      snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
      rm_rf(sub);
    }
    if (d != NULL) {
      closedir(d);
    }
    rmdir(path);
  } else {
    unlink(path);
  }
}

/* The entries of dir (not . and ..), up to max; returns how many. */
static size_t list_dir(const char *dir, char names[][MAILDIR_NAME_MAX],
                       size_t max) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    return 0;
  }
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) {
      continue;
    }
    if (n < max) {
      snprintf(names[n], MAILDIR_NAME_MAX, "%s", e->d_name);
    }
    n++;
  }
  closedir(d);
  return n;
}

static size_t count_dir(const char *dir) {
  return list_dir(dir, NULL, 0);
}

/* Reads a whole file into a NUL-terminated malloc'd string. */
static char *slurp(const char *path, size_t *out_len) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *p = malloc(1 << 20);
  assert_non_null(p);
  size_t n = fread(p, 1, (1 << 20) - 1, f);
  p[n] = '\0';
  fclose(f);
  *out_len = n;
  return p;
}

static const char body_crlf[] = "From: a@s.example\r\nSubject: t\r\n\r\n"
                                "line one\r\n.dot line\r\nbare\rCR\r\nlast";

static struct maildir_delivery delivery(const char *dir, const char *from) {
  return (struct maildir_delivery){
      .dir = dir,
      .return_path = from,
      .delivered_to = "bob@r.example",
      .body = (const uint8_t *)body_crlf,
      .body_len = sizeof(body_crlf) - 1,
      .hostname = "mx.test.example",
  };
}

static void check_mode(const char *path, mode_t want) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  if ((st.st_mode & 07777) != want) {
    fail_msg("%s: mode got %o want %o", path, st.st_mode & 07777, want);
  }
}

/* One delivery into a Maildir whose parents do not exist yet. */
static void test_deliver(void **state) {
  struct tmpdir t;
  tmpdir_make(&t);
  char dir[256], sub[512], path[1024], name[MAILDIR_NAME_MAX], err[256];
  snprintf(dir, sizeof(dir), "%s/r.example/bob/Maildir", t.root);
  struct maildir_delivery d = delivery(dir, "a@s.example");
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   0);
  static const char *const subs[] = {"", "/tmp", "/new", "/cur"};
  for (size_t i = 0; i < 4; i++) {
    snprintf(sub, sizeof(sub), "%s%s", dir, subs[i]);
    check_mode(sub, 0700);
  }
  snprintf(sub, sizeof(sub), "%s/r.example", t.root);
  check_mode(sub, 0700); /* parents too */
  char names[4][MAILDIR_NAME_MAX];
  snprintf(sub, sizeof(sub), "%s/new", dir);
  assert_int_equal(list_dir(sub, names, 4), 1);
  assert_string_equal(names[0], name);
  snprintf(sub, sizeof(sub), "%s/tmp", dir);
  assert_int_equal(count_dir(sub), 0);
  snprintf(sub, sizeof(sub), "%s/cur", dir);
  assert_int_equal(count_dir(sub), 0);

  snprintf(path, sizeof(path), "%s/new/%s", dir, name);
  check_mode(path, 0600);
  size_t len;
  char *got = slurp(path, &len);
  static const char want[] =
      "Return-Path: <a@s.example>\nDelivered-To: bob@r.example\n"
      "From: a@s.example\nSubject: t\n\nline one\n.dot line\nbare\rCR\nlast";
  assert_string_equal(got, want);
  assert_int_equal(len, sizeof(want) - 1);
  /* the name: <sec>.M<usec>P<pid>Q<n>R<16 hex>.<host>,S=<size> */
  char host[64];
  long long sec;
  long usec, pid;
  unsigned long q;
  char rnd[17];
  size_t size;
  int k = sscanf(name, "%lld.M%ldP%ldQ%luR%16[0-9a-f].%63[^,],S=%zu", &sec,
                 &usec, &pid, &q, rnd, host, &size);
  if (k != 7) {
    fail_msg("name %s: %d fields", name, k);
  }
  assert_int_equal(pid, getpid());
  assert_int_equal(strlen(rnd), 16);
  assert_true(usec >= 0 && usec < 1000000);
  assert_string_equal(host, "mx.test.example");
  assert_int_equal(size, len);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal((size_t)st.st_size, size);
  free(got);
  rm_rf(t.root);
}

static void test_null_sender_and_second_delivery(void **state) {
  struct tmpdir t;
  tmpdir_make(&t);
  char dir[256], sub[512], path[1024], err[256];
  char first[MAILDIR_NAME_MAX], second[MAILDIR_NAME_MAX];
  snprintf(dir, sizeof(dir), "%s/Maildir", t.root);
  struct maildir_delivery d = delivery(dir, "");
  assert_int_equal(maildir_deliver(&d, first, sizeof(first), err, sizeof(err)),
                   0);
  assert_int_equal(
      maildir_deliver(&d, second, sizeof(second), err, sizeof(err)), 0);
  assert_string_not_equal(first, second);
  snprintf(sub, sizeof(sub), "%s/new", dir);
  assert_int_equal(count_dir(sub), 2);
  snprintf(path, sizeof(path), "%s/new/%s", dir, second);
  size_t len;
  char *got = slurp(path, &len);
  assert_memory_equal(got, "Return-Path: <>\nDelivered-To: bob@r.example\n",
                      strlen("Return-Path: <>\nDelivered-To: bob@r.example\n"));
  free(got);
  /* out_name may be NULL */
  assert_int_equal(maildir_deliver(&d, NULL, 0, err, sizeof(err)), 0);
  assert_int_equal(count_dir(sub), 3);
  rm_rf(t.root);
}

/* An empty body, a body that is all CRLFs, a hostname to escape. */
static void test_edge_bodies_and_host(void **state) {
  struct tmpdir t;
  tmpdir_make(&t);
  char dir[256], path[1024], name[MAILDIR_NAME_MAX], err[256];
  snprintf(dir, sizeof(dir), "%s/Maildir", t.root);
  static const struct {
    const char *label, *body, *host, *want_body, *want_host;
  } cases[] = {
      {"empty body", "", NULL, "", "localhost"},
      {"only line ends", "\r\n\r\n\r", "", "\n\n\r", "localhost"},
      {"host with / : ,", "x\r\n", "a/b:c,d\\e", "x\n",
       "a\\057b\\072c\\054d\\134e"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct maildir_delivery d = delivery(dir, "a@s.example");
    d.body = (const uint8_t *)cases[i].body;
    d.body_len = strlen(cases[i].body);
    d.hostname = cases[i].host;
    assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                     0);
    assert_null(strchr(name, '/'));
    char want_tail[128];
    snprintf(want_tail, sizeof(want_tail), ".%s,S=", cases[i].want_host);
    if (strstr(name, want_tail) == NULL) {
      fail_msg("%s: name %s lacks %s", cases[i].label, name, want_tail);
    }
    snprintf(path, sizeof(path), "%s/new/%s", dir, name);
    size_t len;
    char *got = slurp(path, &len);
    char want[256];
    snprintf(want, sizeof(want),
             "Return-Path: <a@s.example>\nDelivered-To: bob@r.example\n%s",
             cases[i].want_body);
    if (len != strlen(want) || memcmp(got, want, len) != 0) {
      fail_msg("%s: content differs (%zu octets, want %zu)", cases[i].label,
               len, strlen(want));
    }
    size_t size = strtoull(strstr(name, ",S=") + 3, NULL, 10);
    assert_int_equal(size, len);
    free(got);
  }
  rm_rf(t.root);
}

struct refusal_case {
  const char *label;
  int want_rc;
  const char *want_err;
};

/* Paths that cannot be a Maildir and envelopes that cannot be written:
 * permanent, and nothing is left behind. */
static void test_permanent_failures(void **state) {
  struct tmpdir t;
  tmpdir_make(&t);
  char file[256], dir[512], err[256], name[MAILDIR_NAME_MAX];
  snprintf(file, sizeof(file), "%s/plain", t.root);
  FILE *f = fopen(file, "w");
  assert_non_null(f);
  fclose(f);

  struct maildir_delivery d = delivery(file, "a@s.example");
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   MAILDIR_PERMANENT);
  assert_non_null(strstr(err, "Not a directory"));

  snprintf(dir, sizeof(dir), "%s/sub/Maildir", file); /* parent is a file */
  d = delivery(dir, "a@s.example");
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   MAILDIR_PERMANENT);

  /* tmp/ is a file in an otherwise good Maildir */
  snprintf(dir, sizeof(dir), "%s/M2", t.root);
  assert_int_equal(mkdir(dir, 0700), 0);
  char sub[1024];
  snprintf(sub, sizeof(sub), "%s/tmp", dir);
  f = fopen(sub, "w");
  assert_non_null(f);
  fclose(f);
  d = delivery(dir, "a@s.example");
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   MAILDIR_PERMANENT);

  /* a name too long for the file system */
  char host[300];
  memset(host, 'h', sizeof(host) - 1);
  host[sizeof(host) - 1] = '\0';
  snprintf(dir, sizeof(dir), "%s/M3", t.root);
  d = delivery(dir, "a@s.example");
  d.hostname = host;
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   MAILDIR_PERMANENT);

  /* header injection through the envelope */
  d = delivery(dir, "a@s.example\nX-Evil: 1");
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   MAILDIR_PERMANENT);
  d = delivery(dir, "a@s.example");
  d.delivered_to = "b@r.example\r\nX-Evil: 1";
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   MAILDIR_PERMANENT);

  /* out_name too small: refused before anything is written */
  d = delivery(dir, "a@s.example");
  assert_int_equal(maildir_deliver(&d, name, 10, err, sizeof(err)),
                   MAILDIR_PERMANENT);
  snprintf(sub, sizeof(sub), "%s/new", dir);
  assert_int_equal(count_dir(sub), 0);
  snprintf(sub, sizeof(sub), "%s/tmp", dir);
  assert_int_equal(count_dir(sub), 0);

  /* EACCES on an existing directory (root is not refused by modes) */
  if (geteuid() != 0) {
    snprintf(dir, sizeof(dir), "%s/M4", t.root);
    assert_int_equal(mkdir(dir, 0700), 0);
    assert_int_equal(chmod(dir, 0), 0);
    d = delivery(dir, "a@s.example");
    assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                     MAILDIR_PERMANENT);
    assert_non_null(strstr(err, "Permission denied"));
  }
  rm_rf(t.root);
}

struct fault_case {
  const char *label;
  enum maildir_fault step;
  int err;
  int want_rc;
};

/* Injected failures at each step: the class the caller sees, and no file
 * left in tmp/ or new/. */
static void test_injected_failures(void **state) {
  static const struct fault_case cases[] = {
      {"create ENOSPC", MAILDIR_FAULT_OPEN, ENOSPC, MAILDIR_TEMPORARY},
      {"create EACCES", MAILDIR_FAULT_OPEN, EACCES, MAILDIR_PERMANENT},
      {"write ENOSPC", MAILDIR_FAULT_WRITE, ENOSPC, MAILDIR_TEMPORARY},
      {"write EDQUOT", MAILDIR_FAULT_WRITE, EDQUOT, MAILDIR_TEMPORARY},
      {"fsync EIO", MAILDIR_FAULT_FSYNC, EIO, MAILDIR_TEMPORARY},
      {"rename EDQUOT", MAILDIR_FAULT_RENAME, EDQUOT, MAILDIR_TEMPORARY},
      {"rename ENAMETOOLONG", MAILDIR_FAULT_RENAME, ENAMETOOLONG,
       MAILDIR_PERMANENT},
      {"fsync new/ EIO", MAILDIR_FAULT_FSYNC_DIR, EIO, MAILDIR_TEMPORARY},
  };
  struct tmpdir t;
  tmpdir_make(&t);
  char dir[256], sub[512], err[256], name[MAILDIR_NAME_MAX];
  snprintf(dir, sizeof(dir), "%s/Maildir", t.root);
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const struct fault_case *c = &cases[i];
    struct maildir_delivery d = delivery(dir, "a@s.example");
    maildir_fault_set(c->step, c->err);
    err[0] = '\0';
    int rc = maildir_deliver(&d, name, sizeof(name), err, sizeof(err));
    maildir_fault_set(MAILDIR_FAULT_NONE, 0);
    if (rc != c->want_rc) {
      fail_msg("%s: rc got %d want %d (%s)", c->label, rc, c->want_rc, err);
    }
    if (strstr(err, strerror(c->err)) == NULL) {
      fail_msg("%s: err \"%s\" does not say \"%s\"", c->label, err,
               strerror(c->err));
    }
    static const char *const subs[] = {"tmp", "new"};
    for (size_t k = 0; k < 2; k++) {
      snprintf(sub, sizeof(sub), "%s/%s", dir, subs[k]);
      if (count_dir(sub) != 0) {
        fail_msg("%s: %s is not empty", c->label, sub);
      }
    }
  }
  /* disarmed: the next one goes through */
  struct maildir_delivery d = delivery(dir, "a@s.example");
  assert_int_equal(maildir_deliver(&d, name, sizeof(name), err, sizeof(err)),
                   0);
  rm_rf(t.root);
}

#define THREADS 4
#define PER_THREAD 50

static void *deliver_many(void *arg) {
  const char *dir = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    struct maildir_delivery d = delivery(dir, "a@s.example");
    char name[MAILDIR_NAME_MAX], err[256];
    if (maildir_deliver(&d, name, sizeof(name), err, sizeof(err)) != 0) {
      return (void *)1;
    }
  }
  return NULL;
}

/* Deliveries from several threads at once into one Maildir: every one
 * lands under its own name. */
static void test_threads(void **state) {
  struct tmpdir t;
  tmpdir_make(&t);
  char dir[256], sub[512];
  snprintf(dir, sizeof(dir), "%s/Maildir", t.root);
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++) {
    assert_int_equal(pthread_create(&th[i], NULL, deliver_many, dir), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    void *rc;
    assert_int_equal(pthread_join(th[i], &rc), 0);
    assert_null(rc);
  }
  snprintf(sub, sizeof(sub), "%s/new", dir);
  assert_int_equal(count_dir(sub), THREADS * PER_THREAD);
  snprintf(sub, sizeof(sub), "%s/tmp", dir);
  assert_int_equal(count_dir(sub), 0);
  rm_rf(t.root);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_expand),
      cmocka_unit_test(test_expand_limits),
      cmocka_unit_test(test_deliver),
      cmocka_unit_test(test_null_sender_and_second_delivery),
      cmocka_unit_test(test_edge_bodies_and_host),
      cmocka_unit_test(test_permanent_failures),
      cmocka_unit_test(test_injected_failures),
      cmocka_unit_test(test_threads),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
