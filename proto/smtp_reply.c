/* proto/smtp_reply.c — SMTP reply lines and enhanced status codes; see
 * smtp_reply.h. */
#include "proto/smtp_reply.h"

#include <string.h>

/* RFC 5321 §4.2: Reply-code = %x32-35 %x30-35 %x30-39. */
static int smtp_reply_code(const uint8_t *p) {
  if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '5' || p[2] < '0' ||
      p[2] > '9') {
    return -1;
  }
  return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
}

int smtp_reply_parse_line(struct smtp_reply_line *out, const char **out_why,
                          const uint8_t *line, size_t len) {
  if (len == 0 || line[len - 1] != '\n') {
    *out_why = "unterminated line";
    return -1;
  }
  len--;
  if (len > 0 && line[len - 1] == '\r') {
    len--; /* CRLF; a bare LF is tolerated (see the header) */
  }
  if (len < 3 || (out->code = smtp_reply_code(line)) < 0) {
    *out_why = "malformed reply code";
    return -1;
  }
  if (len > 3 && line[3] != ' ' && line[3] != '-') {
    *out_why = "malformed reply separator";
    return -1;
  }
  out->last = len == 3 || line[3] == ' ';
  out->text = line + (len > 3 ? 4 : 3);
  out->text_len = len > 3 ? len - 4 : 0;
  return 0;
}

void smtp_reply_init(struct smtp_reply *r) {
  r->code = 0;
  r->enhanced[0] = '\0';
  r->text[0] = '\0';
  r->num_lines = 0;
  r->local = 0;
}

size_t smtp_reply_enhanced(char out[SMTP_REPLY_MAX_ENHANCED], const uint8_t *p,
                           size_t n) {
  size_t i = 0;
  out[0] = '\0';
  if (n < 5 || (p[0] != '2' && p[0] != '4' && p[0] != '5') || p[1] != '.') {
    return 0;
  }
  i = 2;
  for (int part = 0; part < 2; part++) {
    size_t start = i;
    while (i < n && i - start < 4 && p[i] >= '0' && p[i] <= '9') {
      i++;
    }
    if (i == start || i - start > 3) {
      return 0;
    }
    if (part == 0) {
      if (i >= n || p[i] != '.') {
        return 0;
      }
      i++;
    }
  }
  if (i < n && p[i] != ' ') {
    return 0;
  }
  memcpy(out, p, i); /* at most 1 + 1 + 3 + 1 + 3 = 9 octets */
  out[i] = '\0';
  return i;
}

/* Appends text to r->text, controls turned into spaces, cut at the limit. */
static void smtp_reply_append_text(struct smtp_reply *r, const uint8_t *p,
                                   size_t n) {
  size_t len = strlen(r->text);
  if (len > 0 && len + 1 < SMTP_REPLY_MAX_TEXT && n > 0) {
    r->text[len++] = ' ';
  }
  for (size_t i = 0; i < n && len + 1 < SMTP_REPLY_MAX_TEXT; i++) {
    uint8_t c = p[i];
    r->text[len++] = (c < 0x20 || c == 0x7f) ? ' ' : (char)c;
  }
  r->text[len] = '\0';
}

enum smtp_reply_status smtp_reply_add(struct smtp_reply *r,
                                      const char **out_why,
                                      const struct smtp_reply_line *l) {
  const uint8_t *text = l->text;
  size_t n = l->text_len;
  char enh[SMTP_REPLY_MAX_ENHANCED];
  if (r->num_lines == 0) {
    r->code = l->code;
    size_t used = smtp_reply_enhanced(enh, text, n);
    /* RFC 3463 §2: the class must agree with the reply code. */
    if (used > 0 && enh[0] == (char)('0' + l->code / 100)) {
      memcpy(r->enhanced, enh, sizeof(enh));
      text += used;
      n -= used;
    }
  } else if (l->code != r->code) {
    *out_why = "reply code changed within a multi-line reply";
    return SMTP_REPLY_BAD;
  } else if (r->enhanced[0] != '\0') {
    size_t used = smtp_reply_enhanced(enh, text, n);
    if (used > 0 && strcmp(enh, r->enhanced) == 0) {
      text += used;
      n -= used;
    }
  }
  while (n > 0 && text[0] == ' ') {
    text++;
    n--;
  }
  r->num_lines++;
  smtp_reply_append_text(r, text, n);
  return l->last ? SMTP_REPLY_DONE : SMTP_REPLY_MORE;
}

void smtp_reply_set(struct smtp_reply *r, int code, const char *enhanced,
                    const char *text) {
  smtp_reply_init(r);
  r->code = code;
  r->num_lines = 1;
  r->local = 1;
  if (enhanced != NULL) {
    size_t n = strlen(enhanced);
    n = n < SMTP_REPLY_MAX_ENHANCED - 1 ? n : SMTP_REPLY_MAX_ENHANCED - 1;
    memcpy(r->enhanced, enhanced, n);
    r->enhanced[n] = '\0';
  }
  smtp_reply_append_text(r, (const uint8_t *)text, strlen(text));
}

int smtp_reply_class(const struct smtp_reply *r) {
  return r->code / 100;
}
