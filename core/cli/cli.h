/* core/cli/cli.h — what the files of `postseal` share: exit statuses, the
 * queue commands' options, output helpers, and the commands that live
 * outside postseal.c (queue_ops.c, queue_summary.c, queue_export.c,
 * keygen.c).
 *
 * Single-threaded; everything prints to stdout (results) or stderr
 * (reasons), prefixed "postseal: ". */
#ifndef POSTSEAL_CORE_CLI_CLI_H
#define POSTSEAL_CORE_CLI_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "core/spool.h"

#define CLI_OK 0
#define CLI_FAIL 1
#define CLI_USAGE 2
#define CLI_DEFAULT_SPOOL_DIR "spool" /* as the daemon's config default */
#define CLI_CONTROL_NAME "control"    /* <spool_dir>/control by default */
#define CLI_ERR_LEN 512

/* Options a queue command accepts besides the spool directory. */
enum {
  QOPT_JSON = 1 << 0,   /* --json */
  QOPT_ALL = 1 << 1,    /* --all */
  QOPT_SOCKET = 1 << 2, /* --socket PATH */
  QOPT_DOMAIN = 1 << 3, /* --domain DOMAIN */
};

/* The options of one queue command. The spool directory is -d/--spool DIR,
 * else the spool_dir of -c CONFIG, else $POSTSEAL_SPOOL_DIR, else "spool".
 * The control socket is --socket PATH, else control_socket of -c CONFIG
 * ("" there: none), else <spool_dir>/control. */
struct queue_opts {
  const char *spool_dir;
  const char *socket_path; /* NULL: the daemon has no control socket */
  int json;
  int all;
  const char *domain;
  char **args; /* positional arguments */
  int num_args;
  char *owned_spool_dir; /* copies taken from the configuration */
  char *owned_socket;
};

/* queue_opts_parse parses argv[1..] (argv[0] is the command's name):
 * options allowed by `flags`, between min_args and max_args positional
 * arguments (max_args < 0: any number). Returns 0, CLI_FAIL (a
 * configuration that does not load; reason printed) or CLI_USAGE (reason
 * printed). Free with queue_opts_free. */
int queue_opts_parse(int argc, char **argv, unsigned flags, int min_args,
                     int max_args, struct queue_opts *out);
void queue_opts_free(struct queue_opts *o);
/* queue_usage prints the queue commands' synopsis. */
void queue_usage(FILE *f);

/* queue_scan scans the spool read-only: never repairs, never reclaims, so
 * it is safe while postseald appends. Returns 0, or -1 (reason printed). */
int queue_scan(const char *dir, struct spool_scan *out);

int64_t cli_now_ms(void);
/* cli_json_string writes s as a JSON string (RFC 8259 §7); invalid UTF-8
 * becomes U+FFFD. cli_text_string writes s with control bytes as '?'. */
void cli_json_string(FILE *f, const char *s);
void cli_text_string(FILE *f, const char *s);
/* cli_opt matches argv[*i] against `--name VALUE` or `--name=VALUE`:
 * 1 with *out set (and *i past the value), 0 for another argument, -1
 * when the value is missing ("postseal: CMD: --name needs a value"
 * printed; cmd may be NULL). */
int cli_opt(int argc, char **argv, int *i, const char *cmd, const char *name,
            const char **out);

/* Commands outside postseal.c; argv[0] is the command's name. */
int cmd_queue_delete(int argc, char **argv);
int cmd_queue_hold(int argc, char **argv);
int cmd_queue_release(int argc, char **argv);
int cmd_queue_flush(int argc, char **argv);
int cmd_queue_summary(int argc, char **argv);
/* queue_export.c: `postseal queue export|import` (moving a stopped
 * replica's queue to another postseald). */
int cmd_queue_export(int argc, char **argv);
int cmd_queue_import(int argc, char **argv);
/* queue_ops.c, shared with queue_export.c: queue_ctl_connect returns a
 * control socket connected to path with send and receive timeouts, or -1
 * with errno (ENOENT, ECONNREFUSED: nothing listens); queue_send_all sends
 * all of p (0 or -1); queue_recv_more appends what the socket has to in
 * (1, 0 at EOF, -1 on an error; EAGAIN: the timeout passed);
 * queue_drop_to_spool_owner, run as root, becomes the owner of dir (0, or
 * -1 printed). */
#define CLI_CTL_TIMEOUT_SECS 60 /* for postseald to answer one request */
int queue_ctl_connect(const char *path);
int queue_send_all(int fd, const uint8_t *p, size_t len);
int queue_recv_more(int fd, struct buf *in);
int queue_drop_to_spool_owner(const char *dir);
/* postseal.c: `postseal queue cat`. */
int cmd_queue_cat(int argc, char **argv);
/* keygen.c: `postseal keygen`, a DKIM key and the record to publish. */
int cmd_keygen(int argc, char **argv);
/* quarantine.c: `postseal quarantine list|show|release|delete`. */
int cmd_quarantine(int argc, char **argv);
/* smime.c: `postseal smime sign|encrypt|verify|decrypt`. */
int cmd_smime(int argc, char **argv);

#endif
