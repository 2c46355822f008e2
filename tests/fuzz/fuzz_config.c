/* tests/fuzz/fuzz_config.c — config_load on arbitrary file contents.
 *
 * The input is written to a memfd and loaded through its /proc/self/fd/N
 * path (no files left behind, one per process). Every input must give
 * either a config (then freed) or a non-empty error that names its origin:
 * "PATH:..." for the file, "env ..." for the environment (which is emptied
 * of POSTSEAL_* at start so only the file matters), or a bare "out of
 * memory". Anything else, or a sanitizer report, is a bug. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/config.h"

extern char **environ;

static int memfd = -1;
static char path[64];

/* unset_postseal_env removes every POSTSEAL_* variable. */
static void unset_postseal_env(void) {
  for (;;) {
    char name[256] = "";
    for (char **e = environ; *e != NULL; e++) {
      if (strncmp(*e, "POSTSEAL_", 9) == 0) {
        size_t n = strcspn(*e, "=");
        snprintf(name, sizeof name, "%.*s", (int)n, *e);
        break;
      }
    }
    if (name[0] == '\0' || unsetenv(name) != 0) {
      return;
    }
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  unset_postseal_env();
  memfd = memfd_create("fuzz_config", MFD_CLOEXEC);
  if (memfd < 0) {
    abort();
  }
  snprintf(path, sizeof path, "/proc/self/fd/%d", memfd);
  return 0;
}

/* write_input replaces the memfd's contents with data. */
static void write_input(const uint8_t *data, size_t size) {
  if (ftruncate(memfd, 0) != 0) {
    abort();
  }
  size_t off = 0;
  while (off < size) {
    ssize_t n = pwrite(memfd, data + off, size - off, (off_t)off);
    if (n <= 0) {
      abort();
    }
    off += (size_t)n;
  }
}

/* error_names_origin: 1 if err starts with "PATH:" or "env ", or is the
 * allocation failure message. */
static int error_names_origin(const char *err) {
  size_t path_len = strlen(path);
  if (strncmp(err, path, path_len) == 0 && err[path_len] == ':') {
    return 1;
  }
  return strncmp(err, "env ", 4) == 0 || strcmp(err, "out of memory") == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  write_input(data, size);
  char err[1024];
  memset(err, 0x5a, sizeof err); /* a missing NUL shows up as no match */
  err[sizeof err - 1] = '\0';
  struct config *c = config_load(path, err, sizeof err);
  if (c != NULL) {
    config_free(c);
    return 0;
  }
  if (err[0] == '\0' || !error_names_origin(err)) {
    fprintf(stderr, "bad error text: \"%s\"\n", err);
    abort();
  }
  return 0;
}
