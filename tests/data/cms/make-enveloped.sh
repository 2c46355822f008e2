#!/usr/bin/env bash
# tests/data/cms/make-enveloped.sh — makes the EnvelopedData and
# AuthEnvelopedData interop fixtures that
# tests/unit/crypto/test_cms_enveloped.c decrypts: a test CA, recipient
# certificates (RSA 2048, EC P-256, X25519; emailProtection EKU,
# rfc822Name SAN, subjectKeyIdentifier, 100 years of validity so the
# tests do not rot) and messages encrypted by the OpenSSL 3 CLI
# (`openssl cms -encrypt`) to them:
#
#   AES-256-GCM, AES-128-GCM (AuthEnvelopedData), AES-256-CBC,
#   AES-128-CBC (EnvelopedData); RSA PKCS#1 v1.5 (OpenSSL's default),
#   RSAES-OAEP with OpenSSL's default SHA-1 parameters and with SHA-256;
#   ECDH P-256 with OpenSSL's default dhSinglePass-stdDH-sha1kdf-scheme
#   and with sha256kdf; recipients by issuerAndSerialNumber and (-keyid)
#   subjectKeyIdentifier; -stream (BER: indefinite lengths, the content
#   in OCTET STRING segments); two recipients in one message.
#
# OpenSSL 3.0's cms cannot encrypt to X25519 (no KARI for it), so the
# X25519 certificate is only for postseal's own round trips.
#
# Every file it writes is named enveloped-*. Run it from anywhere; it
# rewrites the fixtures in place (keys change each run, so commit the
# whole set together).
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

days=36500
cat >"$tmp/ext.cnf" <<'CNF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[rsa]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyEncipherment
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:$ENV::SAN

[agree]
basicConstraints = critical, CA:FALSE
keyUsage = critical, keyAgreement
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:$ENV::SAN
CNF

# The CA: EC P-256, self-signed.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
  -out "$tmp/ca.key" 2>/dev/null
SAN=ca@enveloped.example openssl x509 -new -key "$tmp/ca.key" -days "$days" -sha256 \
  -subj "/O=postseal tests/CN=enveloped test CA" \
  -extfile "$tmp/ext.cnf" -extensions ca -out enveloped-ca.pem

# leaf NAME EXT KEYFILE: a certificate for KEYFILE's public key.
leaf() {
  local name=$1 ext=$2 key=$3
  openssl pkey -in "$key" -pubout -out "$tmp/$name.pub"
  SAN="$name@enveloped.example" openssl x509 -new -days "$days" -sha256 \
    -subj "/O=postseal tests/CN=$name@enveloped.example" \
    -force_pubkey "$tmp/$name.pub" -CA enveloped-ca.pem -CAkey "$tmp/ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" \
    -extfile "$tmp/ext.cnf" -extensions "$ext" -out "enveloped-$name.pem"
}

openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 \
  -out enveloped-rsa.key 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
  -out enveloped-ec.key
openssl genpkey -algorithm X25519 -out enveloped-x25519.key
leaf rsa rsa enveloped-rsa.key
leaf ec agree enveloped-ec.key
leaf x25519 agree enveloped-x25519.key

printf 'Content-Type: text/plain; charset=utf-8\r\n\r\nEnveloped for postseal by openssl cms.\r\n' \
  >enveloped-content.txt

# enc OUT CIPHER ARGS...: encrypt the content with `openssl cms`.
enc() {
  local out=$1 cipher=$2
  shift 2
  openssl cms -encrypt -binary "-$cipher" -in enveloped-content.txt \
    -outform DER -out "$out" "$@"
}

enc enveloped-rsa-pkcs1-aes256gcm.der aes-256-gcm -recip enveloped-rsa.pem
enc enveloped-rsa-pkcs1-aes128gcm.der aes-128-gcm -recip enveloped-rsa.pem
enc enveloped-rsa-pkcs1-aes256cbc.der aes-256-cbc -recip enveloped-rsa.pem
enc enveloped-rsa-pkcs1-aes128cbc.der aes-128-cbc -recip enveloped-rsa.pem
enc enveloped-rsa-oaep-sha1-aes256cbc.der aes-256-cbc \
  -recip enveloped-rsa.pem -keyopt rsa_padding_mode:oaep
enc enveloped-rsa-oaep-sha256-aes256gcm.der aes-256-gcm \
  -recip enveloped-rsa.pem -keyopt rsa_padding_mode:oaep \
  -keyopt rsa_oaep_md:sha256
enc enveloped-rsa-keyid-aes256gcm.der aes-256-gcm -keyid \
  -recip enveloped-rsa.pem
enc enveloped-ec-aes256gcm.der aes-256-gcm -recip enveloped-ec.pem
enc enveloped-ec-aes128gcm.der aes-128-gcm -recip enveloped-ec.pem
enc enveloped-ec-sha256kdf-aes256cbc.der aes-256-cbc \
  -recip enveloped-ec.pem -keyopt ecdh_kdf_md:sha256
enc enveloped-ec-keyid-aes128cbc.der aes-128-cbc -keyid \
  -recip enveloped-ec.pem
enc enveloped-rsa-stream-aes256gcm.ber aes-256-gcm -stream \
  -recip enveloped-rsa.pem
enc enveloped-ec-stream-aes256cbc.ber aes-256-cbc -stream \
  -recip enveloped-ec.pem
enc enveloped-two-aes256gcm.der aes-256-gcm -recip enveloped-rsa.pem \
  -recip enveloped-ec.pem

# Check each decrypts with openssl itself before committing it.
for f in enveloped-rsa-*.der enveloped-rsa-*.ber enveloped-two-*.der; do
  openssl cms -decrypt -binary -inform DER -in "$f" \
    -recip enveloped-rsa.pem -inkey enveloped-rsa.key |
    cmp -s - enveloped-content.txt || {
    echo "$f: openssl does not decrypt it" >&2
    exit 1
  }
done
for f in enveloped-ec-*.der enveloped-ec-*.ber; do
  openssl cms -decrypt -binary -inform DER -in "$f" \
    -recip enveloped-ec.pem -inkey enveloped-ec.key |
    cmp -s - enveloped-content.txt || {
    echo "$f: openssl does not decrypt it" >&2
    exit 1
  }
done
echo "enveloped fixtures written"

# The same messages seed the fuzz target (tests/fuzz/fuzz_cms_enveloped.c
# decrypts with the keys above). Its postseal-*.der seeds were made by
# cms_encrypt to these certificates: remake them after a run of this
# script, or they only exercise the parser.
corpus=../../fuzz/corpus/fuzz_cms_enveloped
mkdir -p "$corpus"
for f in enveloped-*.der enveloped-*.ber; do
  cp "$f" "$corpus/openssl-$f"
done
