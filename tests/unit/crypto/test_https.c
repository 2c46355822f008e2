/* Unit tests: crypto/https — the response parser (table-driven, split at
 * every point, byte by byte) and https_get against a TLS server thread on
 * loopback that plays one scripted response per test: 200 text/plain by
 * length, chunked or up to the close, 301, 404, text/html, oversized,
 * truncated, slow (timeout), a certificate for another name, one from an
 * unknown CA, and an address that refuses before one that answers.
 *
 * Keys and certificates are made at start-up with BoringSSL (EC P-256) in
 * a mkdtemp folder, as tests/unit/crypto/test_tls.c does. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "crypto/https.h"
#include "tests/unit/crypto/pki.h"

#define DAY (24L * 60 * 60)
#define HOST "mta-sts.example.test"
#define PATH "/.well-known/mta-sts.txt"
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- the parser ---- */

struct parse_case {
  const char *label;
  const char *in;
  enum https_parse want; /* after feeding everything (and EOF if asked) */
  int eof;               /* then call https_parser_eof */
  int status;
  const char *body;
  const char *err_has;
};

static const struct parse_case parse_cases[] = {
    {"length",
     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
     "Content-Length: 5\r\n\r\nhello",
     HTTPS_PARSE_DONE, 0, 200, "hello", NULL},
    {"chunked with extension and trailer",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n5;ext=1\r\nhello\r\n"
     "6\r\n world\r\n0\r\nX-Trailer: a\r\n\r\n",
     HTTPS_PARSE_DONE, 0, 200, "hello world", NULL},
    {"bare lf", "HTTP/1.0 200 OK\nContent-Length: 2\n\nok", HTTPS_PARSE_DONE, 0,
     200, "ok", NULL},
    {"interim 100 skipped",
     "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n"
     "\r\nx",
     HTTPS_PARSE_DONE, 0, 200, "x", NULL},
    {"no reason phrase", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
     HTTPS_PARSE_DONE, 0, 200, "", NULL},
    {"204 has no body", "HTTP/1.1 204 No Content\r\n\r\n", HTTPS_PARSE_DONE, 0,
     204, "", NULL},
    {"up to the close", "HTTP/1.1 200 OK\r\n\r\nall of it", HTTPS_PARSE_DONE, 1,
     200, "all of it", NULL},
    {"repeated equal lengths",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nz",
     HTTPS_PARSE_DONE, 0, 200, "z", NULL},
    {"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
     HTTPS_PARSE_ERROR, 1, 200, NULL, "truncated body"},
    {"truncated head", "HTTP/1.1 200 OK\r\nContent-Le", HTTPS_PARSE_ERROR, 1, 0,
     NULL, "truncated response head"},
    {"nothing", "", HTTPS_PARSE_ERROR, 1, 0, NULL, "without a response"},
    {"truncated chunked",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
     "\r\n5\r\nhel",
     HTTPS_PARSE_ERROR, 1, 200, NULL, "truncated chunked"},
    {"http/2", "HTTP/2 200\r\n\r\n", HTTPS_PARSE_ERROR, 0, 0, NULL,
     "status line"},
    {"short status", "HTTP/1.1 20 OK\r\n\r\n", HTTPS_PARSE_ERROR, 0, 0, NULL,
     "status"},
    {"status 600", "HTTP/1.1 600 X\r\n\r\n", HTTPS_PARSE_ERROR, 0, 0, NULL,
     "status code"},
    {"length and chunked",
     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n"
     "\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "both"},
    {"gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "Transfer-Encoding"},
    {"conflicting lengths",
     "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "conflicting"},
    {"length not a number", "HTTP/1.1 200 OK\r\nContent-Length: 1a\r\n\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "Content-Length"},
    {"obsolete folding", "HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "folding"},
    {"blank before colon", "HTTP/1.1 200 OK\r\nA : b\r\n\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "header field"},
    {"bare cr", "HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", HTTPS_PARSE_ERROR, 0, 200,
     NULL, "CR"},
    {"bad chunk size",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
     "zz\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "chunk size"},
    {"chunk size of 9 digits",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n000000001\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "chunk size"},
    {"chunk longer than its size",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "longer"},
    {"101", "HTTP/1.1 101 Switching\r\n\r\n", HTTPS_PARSE_ERROR, 0, 101, NULL,
     "101"},
    {"body over the limit", "HTTP/1.1 200 OK\r\nContent-Length: 65\r\n\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "body over 64"},
    {"chunked over the limit",
     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n41\r\n",
     HTTPS_PARSE_ERROR, 0, 200, NULL, "body over 64"},
};

/* feed_all feeds in[] whole, stepping over heads; *out_heads counts them. */
static enum https_parse feed_all(struct https_parser *p, const uint8_t *in,
                                 size_t len, int *out_heads) {
  size_t off = 0;
  for (;;) {
    size_t used = 0;
    enum https_parse r = https_parser_feed(p, &used, in + off, len - off);
    assert_true(used <= len - off);
    off += used;
    if (r == HTTPS_PARSE_HEAD) {
      (*out_heads)++;
      continue;
    }
    if (r == HTTPS_PARSE_NEED_MORE) {
      assert_int_equal(off, len);
    }
    return r;
  }
}

static void check_parse(const struct parse_case *c, size_t split) {
  struct https_parser p;
  https_parser_init(&p, 64);
  size_t n = strlen(c->in);
  int heads = 0;
  enum https_parse r =
      feed_all(&p, (const uint8_t *)c->in, split < n ? split : n, &heads);
  if (r == HTTPS_PARSE_NEED_MORE && split < n) {
    r = feed_all(&p, (const uint8_t *)c->in + split, n - split, &heads);
  }
  if (r == HTTPS_PARSE_NEED_MORE && c->eof) {
    r = https_parser_eof(&p);
  }
  if (r != c->want) {
    fail_msg("%s (split %zu): got %d (%s), want %d", c->label, split, r, p.err,
             c->want);
  }
  if (c->status != 0 && p.status != c->status) {
    fail_msg("%s: status got %d, want %d", c->label, p.status, c->status);
  }
  if (r == HTTPS_PARSE_DONE) {
    assert_int_equal(heads, 1);
    if (p.body.len != strlen(c->body) ||
        (p.body.len > 0 && memcmp(p.body.data, c->body, p.body.len) != 0)) {
      fail_msg("%s (split %zu): body got '%.*s', want '%s'", c->label, split,
               (int)p.body.len, (const char *)p.body.data, c->body);
    }
  } else if (r == HTTPS_PARSE_ERROR && strstr(p.err, c->err_has) == NULL) {
    fail_msg("%s: reason '%s' lacks '%s'", c->label, p.err, c->err_has);
  }
  https_parser_cleanup(&p);
}

static void test_parser_table(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(parse_cases); i++) {
    check_parse(&parse_cases[i], (size_t)-1);
  }
}

/* Every case split in two at every point gives the same outcome. */
static void test_parser_every_split(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(parse_cases); i++) {
    for (size_t k = 0; k <= strlen(parse_cases[i].in); k++) {
      check_parse(&parse_cases[i], k);
    }
  }
}

static void test_parser_byte_by_byte(void **state) {
  (void)state;
  const char *in = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"
                   "Content-Type: text/plain; charset=utf-8\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n"
                   "3\r\nabc\r\n1;x=y\r\nd\r\n0\r\n\r\nextra";
  struct https_parser p;
  https_parser_init(&p, 64);
  int heads = 0;
  size_t i = 0;
  enum https_parse r = HTTPS_PARSE_NEED_MORE;
  for (; i < strlen(in) && r != HTTPS_PARSE_DONE; i++) {
    r = feed_all(&p, (const uint8_t *)in + i, 1, &heads);
    assert_int_not_equal(r, HTTPS_PARSE_ERROR);
  }
  assert_int_equal(r, HTTPS_PARSE_DONE);
  assert_int_equal(i, strlen(in) - strlen("extra"));
  assert_int_equal(heads, 1);
  assert_int_equal(p.body.len, 4);
  assert_memory_equal(p.body.data, "abcd", 4);
  assert_string_equal(p.content_type, "text/plain; charset=utf-8");
  /* Done stays done; what follows is not taken. */
  size_t used = 7;
  assert_int_equal(https_parser_feed(&p, &used, (const uint8_t *)"x", 1),
                   HTTPS_PARSE_DONE);
  assert_int_equal(used, 0);
  https_parser_cleanup(&p);
}

static void test_parser_head_limit(void **state) {
  (void)state;
  struct https_parser p;
  https_parser_init(&p, 64);
  char *big = malloc(HTTPS_MAX_HEAD + 64);
  assert_non_null(big);
  int n = snprintf(big, 64, "HTTP/1.1 200 OK\r\nX: ");
  memset(big + n, 'a', HTTPS_MAX_HEAD);
  int heads = 0;
  assert_int_equal(
      feed_all(&p, (const uint8_t *)big, (size_t)n + HTTPS_MAX_HEAD, &heads),
      HTTPS_PARSE_ERROR);
  assert_non_null(strstr(p.err, "head over"));
  /* Sticky. */
  size_t used;
  assert_int_equal(https_parser_feed(&p, &used, (const uint8_t *)"\r\n", 2),
                   HTTPS_PARSE_ERROR);
  https_parser_cleanup(&p);
  free(big);
}

static void test_media_type(void **state) {
  (void)state;
  assert_int_equal(https_media_type_is("text/plain", "text/plain"), 1);
  assert_int_equal(
      https_media_type_is(" Text/Plain ; charset=utf-8", "text/plain"), 1);
  assert_int_equal(https_media_type_is("text/plainx", "text/plain"), 0);
  assert_int_equal(https_media_type_is("text/html", "text/plain"), 0);
  assert_int_equal(https_media_type_is("", "text/plain"), 0);
}

/* ---- certificates (as test_tls.c makes them) ---- */

enum cert_id {
  CERT_CA,    /* the client's trust anchor */
  CERT_HOST,  /* mta-sts.example.test; file: leaf + CA */
  CERT_OTHER, /* other.example.test; + CA */
  CERT_ROGUE, /* mta-sts.example.test, self-signed */
  NUM_CERTS,
};

struct cert {
  X509 *x509;
  EVP_PKEY *key;
  char cert_path[128];
  char key_path[128];
};

static struct fixture {
  char dir[64];
  struct cert certs[NUM_CERTS];
  char ca_path[128];
  SSL_CTX *server[NUM_CERTS];
  struct tls_ctx *client;
  int listen_fd;
  uint16_t port;
} fx;

static X509 *make_cert(enum cert_id id, const char *cn, const char *san,
                       enum cert_id issuer_id, int is_ca) {
  static long serial = 1;
  X509 *x = X509_new();
  X509_set_version(x, X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
  X509_gmtime_adj(X509_getm_notBefore(x), -DAY);
  X509_gmtime_adj(X509_getm_notAfter(x), 30 * DAY);
  X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                             (const uint8_t *)cn, -1, -1, 0);
  X509 *issuer = issuer_id == id ? x : fx.certs[issuer_id].x509;
  X509_set_issuer_name(x, X509_get_subject_name(issuer));
  X509_set_pubkey(x, fx.certs[id].key);
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
  if (is_ca) {
    add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
    add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
    add_ext(x, &v3, NID_subject_alt_name, san);
  }
  if (!X509_sign(x, fx.certs[issuer_id].key, EVP_sha256())) {
    fail_msg("test bug: signing %s", cn);
  }
  return x;
}

static void make_certs(void) {
  static const struct {
    const char *cn, *san;
    enum cert_id issuer;
    int is_ca;
  } specs[NUM_CERTS] = {
      [CERT_CA] = {"Test CA", NULL, CERT_CA, 1},
      [CERT_HOST] = {HOST, "DNS:" HOST, CERT_CA, 0},
      [CERT_OTHER] = {"other.example.test", "DNS:other.example.test", CERT_CA,
                      0},
      [CERT_ROGUE] = {HOST, "DNS:" HOST, CERT_ROGUE, 0},
  };
  for (int id = 0; id < NUM_CERTS; id++) {
    struct cert *c = &fx.certs[id];
    snprintf(c->cert_path, sizeof(c->cert_path), "%s/cert%d.pem", fx.dir, id);
    snprintf(c->key_path, sizeof(c->key_path), "%s/key%d.pem", fx.dir, id);
    c->key = make_key();
    c->x509 = make_cert((enum cert_id)id, specs[id].cn, specs[id].san,
                        specs[id].issuer, specs[id].is_ca);
    X509 *chain[3] = {c->x509, NULL, NULL};
    if (specs[id].issuer == CERT_CA && id != CERT_CA) {
      chain[1] = fx.certs[CERT_CA].x509;
    }
    write_pem(c->cert_path, chain, NULL);
    write_pem(c->key_path, NULL, c->key);
  }
}

static SSL_CTX *server_ctx(enum cert_id id) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL ||
      !SSL_CTX_use_certificate_chain_file(ctx, fx.certs[id].cert_path) ||
      !SSL_CTX_use_PrivateKey_file(ctx, fx.certs[id].key_path,
                                   SSL_FILETYPE_PEM)) {
    fail_msg("test bug: server context %d", id);
  }
  return ctx;
}

static int group_setup(void **state) {
  (void)state;
  /* The server thread writes to clients that gave up: EPIPE, no signal. */
  signal(SIGPIPE, SIG_IGN);
  snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_https.XXXXXX");
  if (mkdtemp(fx.dir) == NULL) {
    return -1;
  }
  make_certs();
  snprintf(fx.ca_path, sizeof(fx.ca_path), "%s/ca.pem", fx.dir);
  X509 *ca[] = {fx.certs[CERT_CA].x509, NULL};
  write_pem(fx.ca_path, ca, NULL);
  for (int id = CERT_HOST; id < NUM_CERTS; id++) {
    fx.server[id] = server_ctx((enum cert_id)id);
  }
  char err[256];
  struct tls_client_config cc = {.ca_file = fx.ca_path};
  fx.client = tls_ctx_new_client(&cc, err, sizeof(err));
  if (fx.client == NULL) {
    fprintf(stderr, "client ctx: %s\n", err);
    return -1;
  }
  fx.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in sin = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sin);
  if (fx.listen_fd < 0 ||
      bind(fx.listen_fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
      listen(fx.listen_fd, 8) != 0 ||
      getsockname(fx.listen_fd, (struct sockaddr *)&sin, &len) != 0) {
    return -1;
  }
  fx.port = ntohs(sin.sin_port);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  close(fx.listen_fd);
  for (int id = 0; id < NUM_CERTS; id++) {
    SSL_CTX_free(fx.server[id]);
    unlink(fx.certs[id].cert_path);
    unlink(fx.certs[id].key_path);
    X509_free(fx.certs[id].x509);
    EVP_PKEY_free(fx.certs[id].key);
  }
  tls_ctx_free(fx.client);
  unlink(fx.ca_path);
  rmdir(fx.dir);
  return 0;
}

/* ---- the server thread: one connection, one scripted answer ---- */

enum script {
  S_LENGTH,           /* 200 text/plain, Content-Length */
  S_CHUNKED,          /* 200 text/plain, chunked in pieces */
  S_CLOSE,            /* 200 text/plain up to close_notify */
  S_CLOSE_NO_NOTIFY,  /* 200 text/plain up to a bare TCP close */
  S_REDIRECT,         /* 301 */
  S_NOT_FOUND,        /* 404 */
  S_HTML,             /* 200 text/html */
  S_OVERSIZED,        /* 200, Content-Length over the limit */
  S_OVERSIZED_CHUNKS, /* 200, chunks past the limit */
  S_TRUNCATED,        /* 200, Content-Length 100, 10 octets, close_notify */
  S_SLOW,             /* the handshake, then silence */
};

static const char policy_body[] =
    "version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\n"
    "max_age: 86400\r\n";

struct server {
  pthread_t thread;
  enum script script;
  enum cert_id cert;
  char request[2048]; /* what the client sent */
};

static void ssl_write_str(SSL *ssl, const char *s) {
  SSL_write(ssl, s, (int)strlen(s));
}

static void serve_script(struct server *s, SSL *ssl) {
  char head[512];
  switch (s->script) {
  case S_LENGTH:
    snprintf(head, sizeof(head),
             "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Length: %zu\r\n\r\n",
             strlen(policy_body));
    ssl_write_str(ssl, head);
    ssl_write_str(ssl, policy_body);
    break;
  case S_CHUNKED:
    ssl_write_str(ssl, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n");
    for (size_t off = 0; off < strlen(policy_body); off += 10) {
      size_t n =
          strlen(policy_body) - off < 10 ? strlen(policy_body) - off : 10;
      snprintf(head, sizeof(head), "%zx;piece=1\r\n%.*s\r\n", n, (int)n,
               policy_body + off);
      ssl_write_str(ssl, head);
    }
    ssl_write_str(ssl, "0\r\n\r\n");
    break;
  case S_CLOSE:
  case S_CLOSE_NO_NOTIFY:
    ssl_write_str(ssl, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n");
    ssl_write_str(ssl, policy_body);
    break;
  case S_REDIRECT:
    ssl_write_str(ssl, "HTTP/1.1 301 Moved Permanently\r\nLocation: "
                       "https://elsewhere.example/x\r\nContent-Length: "
                       "0\r\n\r\n");
    break;
  case S_NOT_FOUND:
    ssl_write_str(ssl, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
                       "Content-Length: 9\r\n\r\nnot found");
    break;
  case S_HTML:
    ssl_write_str(ssl, "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                       "Content-Length: 4\r\n\r\n<p/>");
    break;
  case S_OVERSIZED:
    ssl_write_str(ssl, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                       "Content-Length: 70000\r\n\r\n");
    break;
  case S_OVERSIZED_CHUNKS: {
    ssl_write_str(ssl, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n");
    static char chunk[4096 + 16];
    int n = snprintf(chunk, sizeof(chunk), "1000\r\n");
    memset(chunk + n, 'x', 4096);
    memcpy(chunk + n + 4096, "\r\n", 2);
    for (int i = 0; i < 20; i++) {
      if (SSL_write(ssl, chunk, n + 4096 + 2) <= 0) {
        break;
      }
    }
    break;
  }
  case S_TRUNCATED:
    ssl_write_str(ssl, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                       "Content-Length: 100\r\n\r\nversion: S");
    break;
  case S_SLOW:
    usleep(1500 * 1000);
    break;
  }
}

static void *server_main(void *arg) {
  struct server *s = arg;
  int fd = accept(fx.listen_fd, NULL, NULL);
  if (fd < 0) {
    return NULL;
  }
  SSL *ssl = SSL_new(fx.server[s->cert]);
  SSL_set_fd(ssl, fd);
  if (SSL_accept(ssl) == 1) {
    size_t len = 0;
    while (len < sizeof(s->request) - 1 &&
           strstr(s->request, "\r\n\r\n") == NULL) {
      int n =
          SSL_read(ssl, s->request + len, (int)(sizeof(s->request) - 1 - len));
      if (n <= 0) {
        break;
      }
      len += (size_t)n;
      s->request[len] = '\0';
    }
    if (s->script == S_SLOW || strstr(s->request, "\r\n\r\n") != NULL) {
      serve_script(s, ssl);
    }
    if (s->script != S_CLOSE_NO_NOTIFY) {
      SSL_shutdown(ssl);
    }
  }
  ERR_clear_error();
  SSL_free(ssl);
  close(fd);
  return NULL;
}

static void server_start(struct server *s, enum script script,
                         enum cert_id cert) {
  memset(s, 0, sizeof(*s));
  s->script = script;
  s->cert = cert;
  assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

/* ---- https_get ---- */

static void addr_v4(struct sockaddr_storage *ss, const char *ip) {
  struct sockaddr_in *sin = (struct sockaddr_in *)ss;
  memset(ss, 0, sizeof(*ss));
  sin->sin_family = AF_INET;
  assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static int get(struct https_response *resp, char *err, size_t err_len,
               unsigned timeout_ms) {
  struct sockaddr_storage addr;
  addr_v4(&addr, "127.0.0.1");
  struct https_request req = {
      .tls = fx.client,
      .host = HOST,
      .port = fx.port,
      .path = PATH,
      .addrs = &addr,
      .num_addrs = 1,
      .connect_timeout_ms = 2000,
      .timeout_ms = timeout_ms,
      .max_body = 65536,
      .want_media_type = "text/plain",
  };
  return https_get(&req, resp, err, err_len);
}

struct get_case {
  const char *label;
  enum script script;
  enum cert_id cert;
  int want_ok;
  const char *err_has;
};

static const struct get_case get_cases[] = {
    {"length", S_LENGTH, CERT_HOST, 1, NULL},
    {"chunked", S_CHUNKED, CERT_HOST, 1, NULL},
    {"up to close_notify", S_CLOSE, CERT_HOST, 1, NULL},
    {"up to a bare close", S_CLOSE_NO_NOTIFY, CERT_HOST, 0,
     "without close_notify"},
    {"redirect", S_REDIRECT, CERT_HOST, 0,
     "HTTP 301 redirect not followed (RFC 8461 §3.3) (to "
     "https://elsewhere.example/x)"},
    {"not found", S_NOT_FOUND, CERT_HOST, 0, "HTTP 404, want 200"},
    {"html", S_HTML, CERT_HOST, 0, "Content-Type text/html, want text/plain"},
    {"oversized", S_OVERSIZED, CERT_HOST, 0, "body over 65536 octets"},
    {"oversized chunks", S_OVERSIZED_CHUNKS, CERT_HOST, 0,
     "body over 65536 octets"},
    {"truncated", S_TRUNCATED, CERT_HOST, 0, "truncated body"},
    {"another name", S_LENGTH, CERT_OTHER, 0,
     "certificate not verified: name mismatch: wanted " HOST},
    {"unknown CA", S_LENGTH, CERT_ROGUE, 0, "certificate not verified"},
};

static void test_get_table(void **state) {
  (void)state;
  for (size_t i = 0; i < ARRAY_LEN(get_cases); i++) {
    const struct get_case *c = &get_cases[i];
    struct server srv;
    server_start(&srv, c->script, c->cert);
    struct https_response resp;
    char err[HTTPS_ERR_LEN] = "";
    int rc = get(&resp, err, sizeof(err), 5000);
    pthread_join(srv.thread, NULL);
    if ((rc == 0) != c->want_ok) {
      fail_msg("%s: got %d (%s), want %s", c->label, rc, err,
               c->want_ok ? "ok" : "error");
    }
    if (c->want_ok) {
      assert_int_equal(resp.status, 200);
      if (resp.body.len != strlen(policy_body) ||
          memcmp(resp.body.data, policy_body, resp.body.len) != 0) {
        fail_msg("%s: body got '%.*s'", c->label, (int)resp.body.len,
                 (const char *)resp.body.data);
      }
      char want_peer[64];
      snprintf(want_peer, sizeof(want_peer), "127.0.0.1:%u", fx.port);
      assert_string_equal(resp.peer, want_peer);
      char want_req[256];
      snprintf(want_req, sizeof(want_req),
               "GET " PATH " HTTP/1.1\r\nHost: " HOST ":%u\r\n", fx.port);
      if (strncmp(srv.request, want_req, strlen(want_req)) != 0 ||
          strstr(srv.request, "\r\nConnection: close\r\n") == NULL) {
        fail_msg("%s: request was '%s'", c->label, srv.request);
      }
      https_response_cleanup(&resp);
    } else if (strstr(err, c->err_has) == NULL) {
      fail_msg("%s: reason '%s' lacks '%s'", c->label, err, c->err_has);
    } else if (c->cert != CERT_HOST && srv.request[0] != '\0') {
      fail_msg("%s: a request left before the certificate was checked",
               c->label);
    }
  }
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_get_timeout(void **state) {
  (void)state;
  struct server srv;
  server_start(&srv, S_SLOW, CERT_HOST);
  struct https_response resp;
  char err[HTTPS_ERR_LEN] = "";
  int64_t start = now_ms();
  assert_int_equal(get(&resp, err, sizeof(err), 500), -1);
  int64_t took = now_ms() - start;
  pthread_join(srv.thread, NULL);
  if (strstr(err, "timed out after 500 ms") == NULL) {
    fail_msg("reason: %s", err);
  }
  if (took < 450 || took > 1400) {
    fail_msg("took %lld ms, want about 500", (long long)took);
  }
}

/* The first address refuses (nothing listens on 127.0.0.2), the second
 * answers: addresses are tried in order. */
static void test_get_next_address(void **state) {
  (void)state;
  struct server srv;
  server_start(&srv, S_LENGTH, CERT_HOST);
  struct sockaddr_storage addrs[2];
  addr_v4(&addrs[0], "127.0.0.2");
  addr_v4(&addrs[1], "127.0.0.1");
  struct https_request req = {
      .tls = fx.client,
      .host = HOST,
      .port = fx.port,
      .path = PATH,
      .addrs = addrs,
      .num_addrs = 2,
      .timeout_ms = 5000,
      .max_body = 65536,
  };
  struct https_response resp;
  char err[HTTPS_ERR_LEN] = "";
  int rc = https_get(&req, &resp, err, sizeof(err));
  pthread_join(srv.thread, NULL);
  if (rc != 0) {
    fail_msg("got %s", err);
  }
  assert_int_equal(resp.body.len, strlen(policy_body));
  https_response_cleanup(&resp);
  /* Only the refusing address: its reason, with the address. */
  req.num_addrs = 1;
  assert_int_equal(https_get(&req, &resp, err, sizeof(err)), -1);
  char want[64];
  snprintf(want, sizeof(want), "127.0.0.2:%u: connect: ", fx.port);
  if (strncmp(err, want, strlen(want)) != 0) {
    fail_msg("reason: %s", err);
  }
}

static void test_get_bad_request(void **state) {
  (void)state;
  struct sockaddr_storage addr;
  addr_v4(&addr, "127.0.0.1");
  static const struct {
    const char *host, *path;
    size_t num_addrs;
    const char *err;
  } cases[] = {
      {"a.test\r\nX: y", "/", 1, "bad host name"},
      {"", "/", 1, "bad host name"},
      {HOST, "x", 1, "bad path"},
      {HOST, "/a b", 1, "bad path"},
      {HOST, "/", 0, "no address to connect to"},
  };
  for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
    struct https_request req = {.tls = fx.client,
                                .host = cases[i].host,
                                .port = fx.port,
                                .path = cases[i].path,
                                .addrs = &addr,
                                .num_addrs = cases[i].num_addrs};
    struct https_response resp;
    char err[HTTPS_ERR_LEN] = "";
    assert_int_equal(https_get(&req, &resp, err, sizeof(err)), -1);
    assert_string_equal(err, cases[i].err);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parser_table),
      cmocka_unit_test(test_parser_every_split),
      cmocka_unit_test(test_parser_byte_by_byte),
      cmocka_unit_test(test_parser_head_limit),
      cmocka_unit_test(test_media_type),
      cmocka_unit_test(test_get_table),
      cmocka_unit_test(test_get_timeout),
      cmocka_unit_test(test_get_next_address),
      cmocka_unit_test(test_get_bad_request),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
