/* tests/fuzz/fuzz_dkim_tags.c — DKIM tag lists (crypto/dkim.h): the tag
 * parser on the whole input, the input as a key record for both
 * signatures of a fixed message (RFC 8463 Appendix A), and the input as
 * the value of a DKIM-Signature field.
 *
 * Invariants: parsed tags lie inside the input, names are ALPHA
 * *(ALPHA/DIGIT/"_") and unique, values carry no FWS at either end and
 * no more than DKIM_MAX_TAG_VALUE bytes; written back as "n=v;" they
 * parse to the same tags (round trip). Every signature gets exactly one
 * verdict, with a known result and NUL-terminated strings. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/dkim.h"

#define FUZZ_MAX_TAGS 64
#define NOW 1600000000

static const char kSigned[] =
    "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    " subject : date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    " Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    " d=football.example.com; i=@football.example.com;\r\n"
    " q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    " date : message-id : from : subject : date;\r\n"
    " bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    " b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    " DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    " dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
    "From: Joe SixPack <joe@football.example.com>\r\n"
    "To: Suzie Q <suzie@shopping.example.net>\r\n"
    "Subject: Is dinner ready?\r\n"
    "Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    "Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    "\r\n"
    "Hi.\r\n"
    "\r\n"
    "We lost the game.  Are you hungry yet?\r\n"
    "\r\n"
    "Joe.\r\n";

static const char kEdKey[] =
    "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";

static int fws(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int alpha(uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static void check_tags(const uint8_t *data, size_t size) {
  static struct dkim_tag tags[FUZZ_MAX_TAGS], again[FUZZ_MAX_TAGS];
  static struct buf text;
  size_t n = 0, m = 0;
  char err[128];
  if (dkim_tags_parse((const char *)data, size, tags, FUZZ_MAX_TAGS, &n, err,
                      sizeof(err)) != 0) {
    if (memchr(err, '\0', sizeof(err)) == NULL) {
      abort();
    }
    return;
  }
  buf_reset(&text);
  for (size_t i = 0; i < n; i++) {
    const struct dkim_tag *t = &tags[i];
    const uint8_t *name = (const uint8_t *)t->name;
    const uint8_t *value = (const uint8_t *)t->value;
    if (n > FUZZ_MAX_TAGS || name < data || name + t->name_len > data + size ||
        value < data || value + t->value_len > data + size ||
        t->name_len == 0 || !alpha(name[0]) ||
        t->value_len > DKIM_MAX_TAG_VALUE ||
        (t->value_len > 0 && (fws(value[0]) || fws(value[t->value_len - 1])))) {
      abort();
    }
    for (size_t j = 0; j < i; j++) {
      if (tags[j].name_len == t->name_len &&
          memcmp(tags[j].name, t->name, t->name_len) == 0) {
        abort();
      }
    }
    if (buf_append(&text, t->name, t->name_len) != 0 ||
        buf_append(&text, "=", 1) != 0 ||
        buf_append(&text, t->value, t->value_len) != 0 ||
        buf_append(&text, ";", 1) != 0) {
      abort();
    }
  }
  if (dkim_tags_parse((const char *)text.data, text.len, again, FUZZ_MAX_TAGS,
                      &m, NULL, 0) != 0 ||
      m != n) {
    abort();
  }
  for (size_t i = 0; i < n; i++) {
    if (again[i].name_len != tags[i].name_len ||
        again[i].value_len != tags[i].value_len ||
        memcmp(again[i].name, tags[i].name, tags[i].name_len) != 0 ||
        memcmp(again[i].value, tags[i].value, tags[i].value_len) != 0) {
      abort();
    }
  }
}

static void check_verdict(const struct dkim_verdict *d) {
  if (d == NULL || d->result > DKIM_PERMERROR ||
      memchr(d->reason, '\0', sizeof(d->reason)) == NULL ||
      memchr(d->domain, '\0', sizeof(d->domain)) == NULL ||
      memchr(d->selector, '\0', sizeof(d->selector)) == NULL ||
      memchr(d->identity, '\0', sizeof(d->identity)) == NULL ||
      strlen(d->b_prefix) > 8 || d->alg > DKIM_ALG_RSA_SHA1) {
    abort();
  }
}

/* run_verify verifies msg, answering every key query with txt. */
static void run_verify(const uint8_t *msg, size_t len, const char *txt,
                       size_t txt_len) {
  struct dkim_verify *v = dkim_verify_new(msg, len, DKIM_MAX_VERIFY, NOW);
  if (v == NULL) {
    abort();
  }
  for (size_t i = 0; i < dkim_verify_count(v); i++) {
    const char *q = dkim_verify_query(v, i);
    if (q != NULL) {
      if (strlen(q) == 0 || dkim_verify_verdict(v, i) != NULL) {
        abort();
      }
      dkim_verify_key(v, i, DKIM_KEY_FOUND, &txt, &txt_len, 1);
    }
    check_verdict(dkim_verify_verdict(v, i));
  }
  dkim_verify_free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  check_tags(data, size);
  /* The input as the key record. */
  char *txt = malloc(size + 1);
  if (txt == NULL) {
    return 0;
  }
  memcpy(txt, data, size);
  txt[size] = '\0';
  run_verify((const uint8_t *)kSigned, sizeof(kSigned) - 1, txt, size);
  free(txt);
  /* The input as a DKIM-Signature value. */
  static struct buf msg;
  buf_reset(&msg);
  if (buf_append_str(&msg, "DKIM-Signature:") != 0 ||
      buf_append(&msg, data, size) != 0 ||
      buf_append_str(&msg, "\r\nFrom: a@football.example.com\r\n"
                           "Subject: x\r\n\r\nbody\r\n") != 0) {
    abort();
  }
  run_verify(msg.data, msg.len, kEdKey, strlen(kEdKey));
  return 0;
}
