/* proto/ctl.c — the control protocol: framing, requests, replies; see
 * ctl.h.
 *
 * Parsers read through a bounded slice (struct ctl_slice) and take one
 * SP-separated token at a time; an empty token (two spaces, a space at
 * either end) is an error, never skipped. Builders append to a struct buf
 * and roll back on failure, so a caller never sends half a line. */
#include "proto/ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* "RELEASE" is the longest verb; each id takes SP + 16 hex digits. */
_Static_assert(sizeof("RELEASE") - 1 + 1 + CTL_MAX_LINE_IDS * 17 <=
                   CTL_MAX_LINE,
               "CTL_MAX_LINE_IDS ids must fit one line");
_Static_assert(CTL_MAX_LINE_IDS <= CTL_MAX_IDS, "line ids within the limit");

static const char *const verb_names[] = {
    [CTL_VERB_FLUSH] = "FLUSH",   [CTL_VERB_DELETE] = "DELETE",
    [CTL_VERB_HOLD] = "HOLD",     [CTL_VERB_RELEASE] = "RELEASE",
    [CTL_VERB_STATUS] = "STATUS",
};

static const char *const word_names[] = {
    [CTL_WORD_QUEUED] = "queued",       [CTL_WORD_ACTIVE] = "active",
    [CTL_WORD_DEFERRED] = "deferred",   [CTL_WORD_HELD] = "held",
    [CTL_WORD_RELEASED] = "released",   [CTL_WORD_NOT_HELD] = "not-held",
    [CTL_WORD_DELETED] = "deleted",     [CTL_WORD_BUSY] = "busy",
    [CTL_WORD_NOT_FOUND] = "not-found",
};

#define NUM(a) (sizeof(a) / sizeof((a)[0]))

const char *ctl_verb_name(enum ctl_verb verb) {
  return (unsigned)verb < NUM(verb_names) ? verb_names[verb] : NULL;
}

const char *ctl_word_name(enum ctl_word word) {
  return (unsigned)word < NUM(word_names) ? word_names[word] : NULL;
}

int ctl_word_failed(enum ctl_word word) {
  return word == CTL_WORD_UNKNOWN || word == CTL_WORD_BUSY ||
         word == CTL_WORD_NOT_FOUND || ctl_word_name(word) == NULL;
}

/* ---- framing ---- */

enum ctl_line_result ctl_line_next(size_t *out_line_len, size_t *out_consumed,
                                   const char *in, size_t in_len) {
  size_t scan = in_len < CTL_MAX_LINE ? in_len : CTL_MAX_LINE;
  const char *lf = scan ? memchr(in, '\n', scan) : NULL;
  if (lf == NULL) {
    return in_len < CTL_MAX_LINE ? CTL_LINE_NEED_MORE : CTL_LINE_TOO_LONG;
  }
  size_t len = (size_t)(lf - in);
  *out_consumed = len + 1;
  if (len > 0 && in[len - 1] == '\r') {
    len--;
  }
  *out_line_len = len;
  return CTL_LINE_OK;
}

/* ---- bounded slice and tokens ---- */

struct ctl_slice {
  const char *p;
  size_t len;
};

/* slice_token takes the next SP-separated token. Returns 1 with *out set,
 * 0 at the end of the slice, -1 for an empty token. */
static int slice_token(struct ctl_slice *s, struct ctl_slice *out) {
  if (s->p == NULL) {
    return 0;
  }
  const char *sp = memchr(s->p, ' ', s->len);
  size_t n = sp ? (size_t)(sp - s->p) : s->len;
  *out = (struct ctl_slice){s->p, n};
  if (sp != NULL) {
    s->p += n + 1;
    s->len -= n + 1;
  } else {
    s->p = NULL; /* the last token was taken */
    s->len = 0;
  }
  return n > 0 ? 1 : -1;
}

static int slice_eq(struct ctl_slice t, const char *lit) {
  return t.len == strlen(lit) && memcmp(t.p, lit, t.len) == 0;
}

static int slice_eq_nocase(struct ctl_slice t, const char *lit) {
  return t.len == strlen(lit) && strncasecmp(t.p, lit, t.len) == 0;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

/* slice_qid: 1 if t is exactly 16 hex digits, setting *out. */
static int slice_qid(struct ctl_slice t, uint64_t *out) {
  if (t.len != CTL_QID_LEN) {
    return 0;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < t.len; i++) {
    int d = hex_value(t.p[i]);
    if (d < 0) {
      return 0;
    }
    v = (v << 4) | (uint64_t)d;
  }
  *out = v;
  return 1;
}

/* line_chars_ok: 1 if every byte is SP, visible ASCII or %x80-FF. */
static int line_chars_ok(const char *p, size_t len) {
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c < 0x20 || c == 0x7f) {
      return 0;
    }
  }
  return 1;
}

static int domain_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
         c == ':' || c == '[' || c == ']' || c >= 0x80;
}

/* ---- requests ---- */

static int parse_fail(const char **out_err, const char *why) {
  *out_err = why;
  return -1;
}

static enum ctl_verb verb_lookup(struct ctl_slice t) {
  for (size_t v = 1; v < NUM(verb_names); v++) {
    if (slice_eq_nocase(t, verb_names[v])) {
      return (enum ctl_verb)v;
    }
  }
  return 0;
}

/* parse_domain takes the argument of --domain, lower-cased. */
static int parse_domain(struct ctl_request *out, const char **out_err,
                        struct ctl_slice *rest) {
  struct ctl_slice t;
  if (out->verb != CTL_VERB_FLUSH) {
    return parse_fail(out_err, "--domain is only for FLUSH");
  }
  if (out->domain[0] != '\0') {
    return parse_fail(out_err, "--domain given twice");
  }
  if (slice_token(rest, &t) != 1) {
    return parse_fail(out_err, "--domain needs a domain");
  }
  if (t.len > CTL_MAX_DOMAIN) {
    return parse_fail(out_err, "domain too long");
  }
  for (size_t i = 0; i < t.len; i++) {
    unsigned char c = (unsigned char)t.p[i];
    if (!domain_char(c)) {
      return parse_fail(out_err, "bad domain");
    }
    out->domain[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
  }
  out->domain[t.len] = '\0';
  return 0;
}

/* parse_qid adds one queue id argument. */
static int parse_qid(struct ctl_request *out, const char **out_err,
                     struct ctl_slice t) {
  uint64_t id;
  if (!slice_qid(t, &id)) {
    return parse_fail(out_err, t.p[0] == '-' ? "unknown option"
                                             : "bad queue id (16 hex digits)");
  }
  if (out->num_ids == CTL_MAX_IDS) {
    return parse_fail(out_err, "too many queue ids");
  }
  for (size_t i = 0; i < out->num_ids; i++) {
    if (out->ids[i] == id) {
      return parse_fail(out_err, "duplicate queue id");
    }
  }
  out->ids[out->num_ids++] = id;
  return 0;
}

/* parse_arg takes one argument token (and, for --domain, its value). */
static int parse_arg(struct ctl_request *out, const char **out_err,
                     struct ctl_slice t, struct ctl_slice *rest) {
  if (out->verb == CTL_VERB_STATUS) {
    return parse_fail(out_err, "STATUS takes no arguments");
  }
  if (slice_eq(t, "--all")) {
    if (out->verb == CTL_VERB_FLUSH) {
      return parse_fail(out_err, "FLUSH takes no --all (it is the default)");
    }
    if (out->all) {
      return parse_fail(out_err, "--all given twice");
    }
    out->all = 1;
    return 0;
  }
  if (slice_eq(t, "--domain")) {
    return parse_domain(out, out_err, rest);
  }
  return parse_qid(out, out_err, t);
}

/* request_check applies the rules that span arguments. */
static int request_check(const struct ctl_request *r, const char **out_err) {
  if (r->all && r->num_ids > 0) {
    return parse_fail(out_err, "--all excludes queue ids");
  }
  if (r->domain[0] != '\0' && r->num_ids > 0) {
    return parse_fail(out_err, "--domain excludes queue ids");
  }
  if ((r->verb == CTL_VERB_DELETE || r->verb == CTL_VERB_HOLD ||
       r->verb == CTL_VERB_RELEASE) &&
      !r->all && r->num_ids == 0) {
    return parse_fail(out_err, "queue ids or --all needed");
  }
  return 0;
}

int ctl_request_parse(struct ctl_request *out, const char **out_err,
                      const char *line, size_t line_len) {
  memset(out, 0, sizeof *out);
  if (line_len == 0) {
    return parse_fail(out_err, "empty request");
  }
  if (line_len >= CTL_MAX_LINE) {
    return parse_fail(out_err, "request line too long");
  }
  if (!line_chars_ok(line, line_len)) {
    return parse_fail(out_err, "control character in the request");
  }
  struct ctl_slice rest = {line, line_len}, t;
  if (slice_token(&rest, &t) != 1) {
    return parse_fail(out_err, "empty verb");
  }
  out->verb = verb_lookup(t);
  if (out->verb == 0) {
    return parse_fail(out_err, "unknown verb");
  }
  int r;
  while ((r = slice_token(&rest, &t)) != 0) {
    if (r < 0) {
      return parse_fail(out_err, "empty argument (extra space)");
    }
    if (parse_arg(out, out_err, t, &rest) != 0) {
      return -1;
    }
  }
  return request_check(out, out_err);
}

int ctl_request_format(struct buf *out, const struct ctl_request *req) {
  const char *verb = ctl_verb_name(req->verb);
  size_t start = out->len;
  if (verb == NULL || req->num_ids > CTL_MAX_IDS) {
    errno = EINVAL;
    return -1;
  }
  int rc = buf_append_str(out, verb);
  if (rc == 0 && req->all) {
    rc = buf_append_str(out, " --all");
  }
  if (rc == 0 && req->domain[0] != '\0') {
    rc = buf_printf(out, " --domain %.*s", CTL_MAX_DOMAIN, req->domain);
  }
  for (size_t i = 0; rc == 0 && i < req->num_ids; i++) {
    rc = buf_printf(out, " %016" PRIX64, req->ids[i]);
  }
  if (rc == 0) {
    rc = buf_append(out, "\n", 1);
  }
  if (rc != 0) {
    out->len = start;
    errno = ENOMEM;
    return -1;
  }
  /* What we send, the server must accept: check with its own parser. */
  size_t len = out->len - start;
  struct ctl_request check;
  const char *why;
  if (len > CTL_MAX_LINE ||
      ctl_request_parse(&check, &why, (const char *)out->data + start,
                        len - 1) != 0) {
    out->len = start;
    errno = len > CTL_MAX_LINE ? EMSGSIZE : EINVAL;
    return -1;
  }
  return 0;
}

/* ---- IMPORT ---- */

static int parse_count(struct ctl_slice t, uint64_t *out);

int ctl_import_parse(uint64_t *out_len, const char **out_err, const char *line,
                     size_t line_len) {
  struct ctl_slice rest = {line, line_len}, verb, len;
  if (line_len == 0 || slice_token(&rest, &verb) != 1 ||
      !slice_eq_nocase(verb, "IMPORT")) {
    return 0;
  }
  if (slice_token(&rest, &len) != 1 || rest.p != NULL) {
    return parse_fail(out_err, "IMPORT needs one length");
  }
  if (!parse_count(len, out_len) || *out_len == 0) {
    return parse_fail(out_err, "bad IMPORT length");
  }
  return 1;
}

int ctl_import_format(struct buf *out, uint64_t len) {
  size_t start = out->len;
  if (len == 0) {
    errno = EINVAL;
    return -1;
  }
  if (buf_printf(out, "IMPORT %" PRIu64 "\n", len) != 0) {
    out->len = start;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

/* ---- replies ---- */

int ctl_reply_item(struct buf *out, uint64_t queue_id, enum ctl_word word) {
  const char *name = ctl_word_name(word);
  if (name == NULL) {
    errno = EINVAL;
    return -1;
  }
  size_t start = out->len;
  if (buf_printf(out, "%016" PRIX64 " %s\n", queue_id, name) != 0) {
    out->len = start;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

int ctl_reply_ok(struct buf *out, uint64_t count) {
  size_t start = out->len;
  if (buf_printf(out, "OK %" PRIu64 "\n", count) != 0) {
    out->len = start;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

int ctl_reply_err(struct buf *out, const char *text) {
  /* "ERR " + text + LF within one line. */
  size_t max = CTL_MAX_LINE - 5;
  size_t n = text ? strnlen(text, max) : 0;
  size_t start = out->len;
  int rc = buf_append_str(out, "ERR ");
  if (rc == 0 && n == 0) {
    rc = buf_append_str(out, "error");
  }
  for (size_t i = 0; rc == 0 && i < n; i++) {
    unsigned char c = (unsigned char)text[i];
    char safe = c >= 0x20 && c <= 0x7e ? (char)c : '?';
    rc = buf_append(out, &safe, 1);
  }
  if (rc == 0) {
    rc = buf_append(out, "\n", 1);
  }
  if (rc != 0) {
    out->len = start;
    errno = ENOMEM;
    return -1;
  }
  return 0;
}

/* parse_count reads a decimal u64 without leading zeros. */
static int parse_count(struct ctl_slice t, uint64_t *out) {
  if (t.len == 0 || t.len > 20 || (t.len > 1 && t.p[0] == '0')) {
    return 0;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < t.len; i++) {
    if (t.p[i] < '0' || t.p[i] > '9') {
      return 0;
    }
    uint64_t d = (uint64_t)(t.p[i] - '0');
    if (v > (UINT64_MAX - d) / 10) {
      return 0;
    }
    v = v * 10 + d;
  }
  *out = v;
  return 1;
}

static int reply_err_text(struct ctl_reply *out, const char **out_err,
                          struct ctl_slice t) {
  if (t.len == 0 || t.len >= sizeof out->text) {
    return parse_fail(out_err, "bad ERR text");
  }
  for (size_t i = 0; i < t.len; i++) {
    unsigned char c = (unsigned char)t.p[i];
    if (c < 0x20 || c > 0x7e) {
      return parse_fail(out_err, "bad ERR text");
    }
  }
  memcpy(out->text, t.p, t.len);
  out->text[t.len] = '\0';
  out->kind = CTL_REPLY_ERR;
  return 0;
}

/* reply_item parses "qid SP word". */
static int reply_item(struct ctl_reply *out, const char **out_err,
                      struct ctl_slice rest) {
  struct ctl_slice q, w;
  if (slice_token(&rest, &q) != 1 || !slice_qid(q, &out->queue_id)) {
    return parse_fail(out_err, "bad reply line");
  }
  if (slice_token(&rest, &w) != 1 || rest.p != NULL || w.len > CTL_MAX_WORD) {
    return parse_fail(out_err, "bad reply word");
  }
  for (size_t i = 0; i < w.len; i++) {
    if (!((w.p[i] >= 'a' && w.p[i] <= 'z') || w.p[i] == '-')) {
      return parse_fail(out_err, "bad reply word");
    }
  }
  memcpy(out->word_text, w.p, w.len);
  out->word_text[w.len] = '\0';
  out->word = CTL_WORD_UNKNOWN;
  for (size_t i = 1; i < NUM(word_names); i++) {
    if (slice_eq(w, word_names[i])) {
      out->word = (enum ctl_word)i;
    }
  }
  out->kind = CTL_REPLY_ITEM;
  return 0;
}

int ctl_reply_parse(struct ctl_reply *out, const char **out_err,
                    const char *line, size_t line_len) {
  memset(out, 0, sizeof *out);
  if (line_len >= CTL_MAX_LINE) {
    return parse_fail(out_err, "reply line too long");
  }
  struct ctl_slice rest = {line, line_len};
  if (line_len >= 3 && memcmp(line, "OK ", 3) == 0) {
    struct ctl_slice t = {line + 3, line_len - 3};
    if (!parse_count(t, &out->count)) {
      return parse_fail(out_err, "bad OK count");
    }
    out->kind = CTL_REPLY_OK;
    return 0;
  }
  if (line_len >= 4 && memcmp(line, "ERR ", 4) == 0) {
    return reply_err_text(out, out_err,
                          (struct ctl_slice){line + 4, line_len - 4});
  }
  return reply_item(out, out_err, rest);
}
