/* core/daemon/tlsglue.c — TLS on the worker's connections, and the run
 * time objects a configuration needs (TLS contexts, the password table).
 *
 * A connection with c->tls set carries ciphertext on its socket: received
 * bytes go through tls_input() and the plaintext to the SMTP glue (session
 * or delivery); what the glue sends goes through tls_write(). The adapter
 * is sans-I/O (crypto/tls.h), so everything here runs on the worker's
 * thread between completions, with no extra syscalls. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/daemon/daemon.h"
#include "core/log.h"

/* ---- runtime ---- */

void runtime_up_ref(struct runtime *rt) {
  __atomic_add_fetch(&rt->refs, 1, __ATOMIC_RELAXED);
}

void runtime_put(struct runtime *rt) {
  if (rt == NULL || __atomic_sub_fetch(&rt->refs, 1, __ATOMIC_ACQ_REL) != 0) {
    return;
  }
  tls_ctx_free(rt->tls_server);
  tls_ctx_free(rt->tls_client);
  auth_db_free(rt->auth);
  dkim_runtime_free(rt->dkim);
  smime_runtime_free(rt->smime);
  dmarc_psl_free(rt->psl);
  free(rt);
}

static void runtime_free_cb(void *p) {
  runtime_put(p);
}

/* runtime_build loads what cfg names; on error nothing is kept. */
static struct runtime *runtime_build(const struct config *cfg, char *err,
                                     size_t err_len) {
  struct runtime *rt = calloc(1, sizeof(*rt));
  if (rt == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  rt->refs = 1;
  char why[512] = "";
  if (cfg->tls_cert_file[0] != '\0') {
    struct tls_server_config sc = {.cert_file = cfg->tls_cert_file,
                                   .key_file = cfg->tls_key_file,
                                   .min_version = cfg->tls_min_version};
    rt->tls_server = tls_ctx_new_server(&sc, why, sizeof(why));
    if (rt->tls_server == NULL) {
      snprintf(err, err_len, "tls: %s", why);
      goto fail;
    }
  }
  /* A missing CA bundle only means "verify" cannot succeed: encryption
   * (may, encrypt) and DANE still work, so it is not fatal. */
  struct tls_client_config cc = {.ca_file =
                                     cfg->tls_ca_file[0] != '\0' &&
                                             access(cfg->tls_ca_file, R_OK) == 0
                                         ? cfg->tls_ca_file
                                         : NULL,
                                 .min_version = cfg->tls_min_version};
  rt->tls_client = tls_ctx_new_client(&cc, why, sizeof(why));
  if (rt->tls_client == NULL) {
    snprintf(err, err_len, "tls client: %s", why);
    goto fail;
  }
  if (cfg->auth_passwd_file[0] != '\0') {
    rt->auth = auth_db_load(cfg->auth_passwd_file, why, sizeof(why));
    if (rt->auth == NULL) {
      snprintf(err, err_len, "auth.passwd_file: %s", why);
      goto fail;
    }
  }
  if (dkim_runtime_load(rt, cfg, err, err_len) != 0 ||
      smime_runtime_load(rt, cfg, err, err_len) != 0) {
    goto fail;
  }
  return rt;
fail:
  runtime_put(rt);
  return NULL;
}

int runtime_attach(struct config *cfg, char *err, size_t err_len) {
  struct runtime *rt = runtime_build(cfg, err, err_len);
  if (rt == NULL) {
    return -1;
  }
  cfg->runtime = rt;
  cfg->runtime_free = runtime_free_cb;
  return 0;
}

/* ---- TLS on connections ---- */

void conn_tls_flush(struct conn *c) {
  struct worker *w = c->w;
  buf_reset(&w->tls_out);
  if (tls_take_output(c->tls, &w->tls_out) != 0) {
    c->closing = 1; /* out of memory: the peer sees the stream end */
  }
  if (w->tls_out.len > 0) {
    conn_send_raw(c, w->tls_out.data, w->tls_out.len);
  }
  buf_reset(&w->tls_out);
}

int conn_tls_start_server(struct conn *c) {
  struct runtime *rt = cfg_runtime(c->w->cfg);
  if (rt == NULL || rt->tls_server == NULL) {
    return -1;
  }
  c->tls = tls_new_server(rt->tls_server);
  if (c->tls == NULL) {
    return -1;
  }
  c->tls_ready = 0;
  /* The handshake gets the command timeout; the engine has no timer for
   * it (RFC 3207 leaves it to the server). */
  c->deadline_ms = c->w->now_ms + (int64_t)c->w->cfg->timeout_command * 1000;
  return 0;
}

/* conn_tls_count records a finished handshake in the metrics. */
static void conn_tls_count(struct conn *c) {
  struct worker_metrics *m = &c->w->m;
  int dir = c->outbound ? 1 : 0;
  METRIC_ADD(m->tls_handshakes[dir][tls_session_reused(c->tls) ? TLS_HS_RESUMED
                                                               : TLS_HS_OK],
             1);
  METRIC_ADD(m->tls_versions[dir][strcmp(tls_version(c->tls), "TLSv1.3") == 0],
             1);
}

/* conn_tls_failed ends a connection whose TLS broke, after the alert. */
static void conn_tls_failed(struct conn *c) {
  const char *why = tls_error(c->tls);
  if (!c->tls_ready) {
    METRIC_ADD(c->w->m.tls_handshakes[c->outbound ? 1 : 0][TLS_HS_FAILED], 1);
  }
  if (c->outbound) {
    delivery_on_tls_error(c, why[0] ? why : "TLS error");
    if (c->freed) {
      return;
    }
  } else {
    struct log_rec r;
    log_begin(&r, c->tls_ready ? "tls_error" : "tls_handshake_failed");
    log_str(&r, "session", c->session_text);
    log_str(&r, "client", c->peer_text);
    log_str(&r, "reason", why[0] ? why : "TLS error");
    log_end(&r);
  }
  conn_close(c);
}

/* tls_plain_wipe zeroes and empties the worker's plaintext scratch. */
static void tls_plain_wipe(struct worker *w) {
  if (w->tls_plain.len > 0) {
    explicit_bzero(w->tls_plain.data, w->tls_plain.len);
  }
  buf_reset(&w->tls_plain);
}

void conn_tls_on_input(struct conn *c, const uint8_t *in, size_t in_len) {
  struct worker *w = c->w;
  tls_plain_wipe(w); /* what an early return below left */
  enum tls_status st = tls_input(c->tls, &w->tls_plain, in, in_len);
  conn_tls_flush(c);
  if (st == TLS_ERROR) {
    conn_tls_failed(c);
    return;
  }
  if (!c->tls_ready && tls_handshake_done(c->tls)) {
    c->tls_ready = 1;
    conn_tls_count(c);
    if (c->outbound) {
      delivery_on_tls_ready(c);
    } else {
      session_on_tls_ready(c);
    }
    if (c->freed || c->shut) {
      return;
    }
  }
  /* The glue may keep a pointer into the plaintext only while it runs;
   * both copy what they cannot take at once. */
  if (w->tls_plain.len > 0 && (c->outbound || !c->closing)) {
    if (c->outbound) {
      delivery_on_input(c, w->tls_plain.data, w->tls_plain.len);
    } else {
      session_on_input(c, w->tls_plain.data, w->tls_plain.len);
    }
  }
  /* Decrypted client input may carry AUTH credentials: not left behind
   * in the scratch buffer (the engine wipes its own copy). A next hop's
   * replies carry none: no need to touch every byte of them again. */
  if (c->outbound) {
    buf_reset(&w->tls_plain);
  } else {
    tls_plain_wipe(w);
  }
  if (st == TLS_CLOSED && !c->freed && !c->shut) {
    /* close_notify: as a TCP EOF, but authenticated. */
    if (c->outbound) {
      delivery_on_eof(c);
    }
    if (!c->freed) {
      conn_close(c);
    }
  }
}
