/* tests/fuzz/fuzz_smime.c — the S/MIME MIME layer (crypto/smime.h):
 * header fields, Content-Type, multipart bodies, base64, splitting and the
 * canonical form.
 *
 * Invariants: smime_parse either fails with nothing left behind or
 * classifies; a multipart/signed it accepts, rebuilt around the same
 * first part and signature with a fresh boundary, parses to the same bytes
 * (round trip), and an enveloped kind passes cms_check_enveloped;
 * smime_from_address gives a non-empty address without angle brackets,
 * comments or line breaks, or an error and ""; base64 decoding of the
 * input, re-encoded and decoded again, gives the same bytes; smime_split and
 * smime_join give a message whose outer header and entity split the same again;
 * smime_canon, when it succeeds, gives CRLF-only 7-bit lines of at most
 * SMIME_MAX_LINE octets and is idempotent. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/smime.h"

static void check_canonical(const struct buf *b) {
  size_t line = 0;
  for (size_t i = 0; i < b->len; i++) {
    uint8_t c = b->data[i];
    if (c == '\r' && i + 1 < b->len && b->data[i + 1] == '\n') {
      i++;
      line = 0;
    } else if (c >= 0x80 || c == 0 || c == '\r' || c == '\n' ||
               ++line > SMIME_MAX_LINE) {
      abort();
    }
  }
}

/* rebuild wraps content and der into a fresh multipart/signed. */
static void rebuild(struct buf *m, const uint8_t *content, size_t content_len,
                    const struct buf *der) {
  char boundary[32] = "fz";
  for (int n = 0; content_len > 0 && memmem(content, content_len, boundary,
                                            strlen(boundary)) != NULL;
       n++) {
    snprintf(boundary, sizeof boundary, "fz=%d_%d", n, (int)content_len);
  }
  buf_printf(m,
             "Content-Type: multipart/signed; protocol=\"application/"
             "pkcs7-signature\"; micalg=sha-256; boundary=\"%s\"\r\n\r\n"
             "--%s\r\n",
             boundary, boundary);
  buf_append(m, content, content_len);
  buf_printf(m,
             "\r\n--%s\r\nContent-Type: application/pkcs7-signature\r\n"
             "Content-Transfer-Encoding: base64\r\n\r\n",
             boundary);
  smime_b64_encode(m, der->data, der->len);
  buf_printf(m, "--%s--\r\n", boundary);
}

static void check_parse(const uint8_t *data, size_t size) {
  struct smime_parsed p;
  int rc = smime_parse(&p, data, size, NULL, 0);
  if (rc != SMIME_OK) {
    if (p.kind != SMIME_KIND_NONE || p.der.len != 0) {
      abort();
    }
    return;
  }
  /* an enveloped kind is a whole, well-formed EnvelopedData */
  if ((p.kind == SMIME_KIND_ENVELOPED || p.kind == SMIME_KIND_AUTH_ENVELOPED) &&
      cms_check_enveloped(p.der.data, p.der.len, NULL, 0) != CMS_OK) {
    abort();
  }
  if (p.kind != SMIME_KIND_MULTIPART_SIGNED) {
    smime_parsed_cleanup(&p);
    return;
  }
  if (p.content < data || p.content + p.content_len > data + size) {
    abort();
  }
  /* a content that holds a delimiter-looking line for our boundary is
   * impossible: the boundary is chosen absent from it */
  struct buf m = {0};
  struct smime_parsed q;
  rebuild(&m, p.content, p.content_len, &p.der);
  if (smime_parse(&q, m.data, m.len, NULL, 0) != SMIME_OK ||
      q.kind != SMIME_KIND_MULTIPART_SIGNED || q.content_len != p.content_len ||
      (p.content_len > 0 && memcmp(q.content, p.content, p.content_len)) ||
      q.der.len != p.der.len ||
      (p.der.len > 0 && memcmp(q.der.data, p.der.data, p.der.len))) {
    abort();
  }
  smime_parsed_cleanup(&q);
  smime_parsed_cleanup(&p);
  buf_free(&m);
}

static void check_b64(const uint8_t *data, size_t size) {
  struct buf a = {0}, enc = {0}, b = {0};
  if (smime_b64_decode(&a, data, size) == SMIME_OK) {
    if (smime_b64_encode(&enc, a.data, a.len) != SMIME_OK ||
        smime_b64_decode(&b, enc.data, enc.len) != SMIME_OK || a.len != b.len ||
        (a.len > 0 && memcmp(a.data, b.data, a.len) != 0)) {
      abort();
    }
  } else if (a.len != 0) {
    abort();
  }
  buf_free(&a);
  buf_free(&enc);
  buf_free(&b);
}

static void check_split_canon(const uint8_t *data, size_t size) {
  struct buf outer = {0}, entity = {0}, joined = {0}, o2 = {0}, e2 = {0};
  struct buf canon = {0}, again = {0};
  if (smime_split(&outer, &entity, data, size, NULL, 0) == SMIME_OK) {
    if (smime_join(&joined, outer.data, outer.len, entity.data, entity.len) !=
            SMIME_OK ||
        smime_split(&o2, &e2, joined.data, joined.len, NULL, 0) != SMIME_OK ||
        o2.len != outer.len ||
        (outer.len > 0 && memcmp(o2.data, outer.data, outer.len) != 0) ||
        e2.len != entity.len ||
        (entity.len > 0 && memcmp(e2.data, entity.data, entity.len) != 0)) {
      abort();
    }
    if (smime_canon(&canon, entity.data, entity.len, NULL, 0) == SMIME_OK) {
      check_canonical(&canon);
      if (smime_canon(&again, canon.data, canon.len, NULL, 0) != SMIME_OK ||
          again.len != canon.len ||
          (canon.len > 0 && memcmp(again.data, canon.data, canon.len) != 0)) {
        abort();
      }
    } else if (canon.len != 0) {
      abort();
    }
  }
  buf_free(&outer);
  buf_free(&entity);
  buf_free(&joined);
  buf_free(&o2);
  buf_free(&e2);
  buf_free(&canon);
  buf_free(&again);
}

/* check_from: smime_from_address never succeeds with an empty address
 * or one that is not local@domain with the characters RFC 5322 allows in
 * each part (no line break anywhere), and leaves "" on error. */
static void check_from(const uint8_t *data, size_t size) {
  char out[CMS_EMAIL_MAX], err[160];
  err[0] = '\0';
  int rc = smime_from_address(out, sizeof out, data, size, err, sizeof err);
  if (memchr(out, '\0', sizeof out) == NULL ||
      memchr(err, '\0', sizeof err) == NULL) {
    abort();
  }
  if (rc != SMIME_OK) {
    if (out[0] != '\0' || err[0] == '\0') {
      abort();
    }
    return;
  }
  size_t n = strlen(out);
  if (n == 0 || n > SMIME_MAX_ADDRESS || strchr(out, '@') == NULL) {
    abort();
  }
  /* The domain: a literal "[dtext]" (RFC 5322 §3.4.1: printable but
   * "[", "]" and "\\", so ";" or a quote may be in it), else a dot-atom. */
  const char *dom;
  if (out[n - 1] == ']') {
    dom = strrchr(out, '[');
    if (dom == NULL || dom == out || dom[-1] != '@') {
      abort();
    }
    for (const char *q = dom + 1; q < out + n - 1; q++) {
      if (*q < 33 || *q > 126 || *q == '[' || *q == ']' || *q == '\\') {
        abort();
      }
    }
  } else {
    dom = strrchr(out, '@') + 1;
    if (*dom == '\0' || strpbrk(dom, "\r\n\t <>(),;:\"\\[]") != NULL) {
      abort();
    }
  }
  /* The local part: a quoted one may hold anything printable but line
   * breaks; a dot-atom none of the specials. */
  const char *bad = out[0] == '"' ? "\r\n" : "\r\n\t <>(),;:\"\\";
  for (const char *q = out; q < dom - 1; q++) {
    if (strchr(bad, *q) != NULL) {
      abort();
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) {
    return 0;
  }
  check_parse(data, size);
  check_from(data, size);
  check_b64(data, size);
  check_split_canon(data, size);
  return 0;
}
