/* core/route.c — transport specs and the domain table (see route.h). */
#include "core/route.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "core/netaddr.h"

static int errf(char *err, size_t err_len, const char *fmt, ...) {
  if (err != NULL && err_len > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
  }
  return -1;
}

/* parse_hostport reads "host", "host:port", "[host]", "[host]:port".
 * *bracketed tells whether brackets were used; port defaults to def. */
static int parse_hostport(const char *in, char *host, size_t host_len,
                          uint16_t *port, int *bracketed, uint16_t def) {
  int no_mx = 0;
  uint16_t p = def;
  if (relayhost_parse(in, host, host_len, &p, &no_mx) != 0) {
    return -1;
  }
  /* relayhost_parse defaults to 25; honour our own default. */
  if (strchr(no_mx ? strchr(in, ']') : in, ':') == NULL) {
    p = def;
  }
  *port = p;
  *bracketed = no_mx;
  return 0;
}

int route_parse(const char *spec, struct route *out, char *err,
                size_t err_len) {
  memset(out, 0, sizeof(*out));
  const char *colon = strchr(spec, ':');
  if (colon == NULL) {
    return errf(err, err_len,
                "\"%.80s\" is not TRANSPORT:NEXTHOP (smtp, lmtp, maildir, "
                "error)",
                spec);
  }
  size_t tlen = (size_t)(colon - spec);
  const char *next = colon + 1;
  int bracketed = 0;
  if (tlen == 4 && strncmp(spec, "smtp", 4) == 0) {
    if (*next == '\0') {
      out->kind = ROUTE_SMTP_MX;
      out->port = 25;
      return 0;
    }
    if (parse_hostport(next, out->host, sizeof(out->host), &out->port,
                       &bracketed, 25) != 0) {
      return errf(err, err_len,
                  "\"%.80s\": next hop is not host, host:port, [host] or "
                  "[host]:port",
                  spec);
    }
    out->kind = bracketed ? ROUTE_SMTP_HOST : ROUTE_SMTP_MX;
    return 0;
  }
  if (tlen == 4 && strncmp(spec, "lmtp", 4) == 0) {
    if (strncmp(next, "unix:", 5) == 0) {
      const char *p = next + 5;
      if (p[0] != '/' || strlen(p) >= 108 /* sun_path */) {
        return errf(err, err_len,
                    "\"%.80s\": unix socket path must be absolute and "
                    "shorter than 108 bytes",
                    spec);
      }
      out->kind = ROUTE_LMTP_UNIX;
      snprintf(out->path, sizeof(out->path), "%s", p);
      return 0;
    }
    if (parse_hostport(next, out->host, sizeof(out->host), &out->port,
                       &bracketed, 24) != 0) {
      return errf(err, err_len,
                  "\"%.80s\": next hop is not host:port, [host]:port or "
                  "unix:/path",
                  spec);
    }
    out->kind = ROUTE_LMTP_TCP;
    return 0;
  }
  if (tlen == 7 && strncmp(spec, "maildir", 7) == 0) {
    size_t n = strlen(next);
    if (n == 0 || n >= sizeof(out->path)) {
      return errf(err, err_len, "\"%.80s\": maildir needs a path template",
                  spec);
    }
    for (const char *p = next; *p; p++) {
      if (*p == '%' && p[1] != 'u' && p[1] != 'd' && p[1] != '%') {
        return errf(err, err_len,
                    "\"%.80s\": only %%u, %%d and %%%% may follow %%", spec);
      }
      if (*p == '%') {
        p++;
      }
    }
    out->kind = ROUTE_MAILDIR;
    memcpy(out->path, next, n + 1);
    return 0;
  }
  if (tlen == 5 && strncmp(spec, "error", 5) == 0) {
    out->kind = ROUTE_ERROR;
    snprintf(out->path, sizeof(out->path), "%s",
             *next ? next : "recipient refused by configuration");
    return 0;
  }
  return errf(err, err_len,
              "\"%.80s\": unknown transport (smtp, lmtp, maildir, error)",
              spec);
}

void route_format(const struct route *r, char *out, size_t out_len) {
  int v6 = strchr(r->host, ':') != NULL;
  switch (r->kind) {
  case ROUTE_SMTP_MX:
    if (r->host[0] == '\0') {
      snprintf(out, out_len, "smtp:");
    } else if (r->port == 25) {
      snprintf(out, out_len, "smtp:%s", r->host);
    } else {
      snprintf(out, out_len, "smtp:%s:%u", r->host, r->port);
    }
    return;
  case ROUTE_SMTP_HOST:
    snprintf(out, out_len, "smtp:[%s]:%u", r->host, r->port);
    return;
  case ROUTE_LMTP_TCP:
    snprintf(out, out_len, v6 ? "lmtp:[%s]:%u" : "lmtp:%s:%u", r->host,
             r->port);
    return;
  case ROUTE_LMTP_UNIX:
    snprintf(out, out_len, "lmtp:unix:%s", r->path);
    return;
  case ROUTE_MAILDIR:
    snprintf(out, out_len, "maildir:%s", r->path);
    return;
  case ROUTE_ERROR:
    snprintf(out, out_len, "error:%s", r->path);
    return;
  }
  snprintf(out, out_len, "?");
}

int route_entry_parse(const char *line, struct route_entry *out, char *err,
                      size_t err_len) {
  memset(out, 0, sizeof(*out));
  while (*line == ' ' || *line == '\t') {
    line++;
  }
  size_t n = strcspn(line, " \t");
  if (n == 0 || n >= sizeof(out->domain)) {
    return errf(err, err_len, "\"%.80s\" is not \"DOMAIN TRANSPORT:NEXTHOP\"",
                line);
  }
  for (size_t i = 0; i < n; i++) {
    out->domain[i] = (char)tolower((unsigned char)line[i]);
  }
  const char *d = out->domain;
  if (strcmp(d, "*") != 0 && !netaddr_hostname_valid(d[0] == '.' ? d + 1 : d)) {
    return errf(err, err_len, "\"%.80s\": \"%s\" is not a domain, .domain or *",
                line, d);
  }
  const char *spec = line + n;
  while (*spec == ' ' || *spec == '\t') {
    spec++;
  }
  char spec_buf[768];
  snprintf(spec_buf, sizeof(spec_buf), "%s", spec);
  size_t sl = strlen(spec_buf);
  while (sl > 0 && (spec_buf[sl - 1] == ' ' || spec_buf[sl - 1] == '\t')) {
    spec_buf[--sl] = '\0';
  }
  if (sl == 0) {
    return errf(err, err_len, "\"%.80s\": missing TRANSPORT:NEXTHOP", line);
  }
  return route_parse(spec_buf, &out->route, err, err_len);
}

const struct route_entry *route_table_lookup(const struct route_entry *table,
                                             size_t n, const char *domain) {
  const struct route_entry *star = NULL, *best = NULL;
  size_t best_len = 0;
  size_t dlen = strlen(domain);
  while (dlen > 0 && domain[dlen - 1] == '.') {
    dlen--;
  }
  for (size_t i = 0; i < n; i++) {
    const char *d = table[i].domain;
    size_t len = strlen(d);
    if (strcmp(d, "*") == 0) {
      star = star ? star : &table[i];
    } else if (d[0] != '.') {
      if (len == dlen && strncasecmp(d, domain, dlen) == 0) {
        return &table[i];
      }
    } else if (dlen > len && strncasecmp(d, domain + dlen - len, len) == 0 &&
               len > best_len) {
      best = &table[i];
      best_len = len;
    }
  }
  return best ? best : star;
}
