#!/usr/bin/env bash
# tests/data/cms/make-signed.sh — makes the SignedData interop fixtures
# that tests/unit/crypto/test_cms_signed.c verifies: a test CA, signer
# certificates (RSA 2048, EC P-256, EC P-384 (verify only), Ed25519; emailProtection EKU,
# rfc822Name SAN, 100 years of validity so the tests do not rot), one
# expired signer (2000-2001, made with `openssl ca -startdate/-enddate`
# since OpenSSL 3.0's x509 has no -not_before), and messages signed by
# the OpenSSL 3 CLI (`openssl cms -sign`): detached, encapsulated, BER
# (-stream, indefinite lengths), SHA-384, RSASSA-PSS, ECDSA, Ed25519, two
# signers, no signed attributes, subjectKeyIdentifier, no certificates
# (Ed25519 signing is not in OpenSSL 3.0's cms; see below).
#
# Every file it writes is named signed-*. Run it from anywhere; it
# rewrites the fixtures in place (keys and signatures change each run, so
# commit the whole set together).
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

[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:$ENV::SAN

[leaf_ed]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation
extendedKeyUsage = emailProtection
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = email:$ENV::SAN

[leaf_serverauth]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
subjectAltName = email:$ENV::SAN

[ca_cmd]
dir = TMPDIR
database = $dir/index.txt
new_certs_dir = $dir
serial = $dir/serial
default_md = sha256
policy = any
copy_extensions = none
unique_subject = no
[any]
commonName = supplied
CNF
sed -i "s|TMPDIR|$tmp|" "$tmp/ext.cnf"
export SAN=unused@example.org
rm -f signed-*.der signed-*.ber

# The CA (EC P-256, self-signed).
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
  -out signed-ca.key 2>/dev/null
openssl req -new -x509 -key signed-ca.key -subj "/CN=postseal test CA" \
  -days $days -sha256 -config "$tmp/ext.cnf" -extensions ca \
  -out signed-ca.pem

# leaf NAME KEYGEN-ARGS EXTENSIONS EMAIL SERIAL
leaf() {
  local name=$1 keyargs=$2 exts=$3 email=$4 serial=$5
  # shellcheck disable=SC2086
  openssl genpkey $keyargs -out "signed-$name.key" 2>/dev/null
  openssl req -new -key "signed-$name.key" -subj "/CN=$name signer" \
    -out "$tmp/$name.csr"
  SAN=$email openssl x509 -req -in "$tmp/$name.csr" -CA signed-ca.pem \
    -CAkey signed-ca.key -set_serial "$serial" -days $days -sha256 \
    -extfile "$tmp/ext.cnf" -extensions "$exts" -out "signed-$name.pem" \
    2>/dev/null
}
leaf rsa "-algorithm RSA -pkeyopt rsa_keygen_bits:2048" leaf \
  rsa@example.org 1001
leaf ec "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" leaf \
  ec@example.org 1002
leaf ec384 "-algorithm EC -pkeyopt ec_paramgen_curve:P-384" leaf \
  ec384@example.org 1006
leaf ed "-algorithm ED25519" leaf_ed ed@example.org 1003
leaf tls "-algorithm EC -pkeyopt ec_paramgen_curve:P-256" leaf_serverauth \
  tls@example.org 1004

# The expired signer: valid 2000-01-01 to 2001-01-01, through `openssl ca`.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
  -out signed-expired.key 2>/dev/null
openssl req -new -key signed-expired.key -subj "/CN=expired signer" \
  -out "$tmp/expired.csr"
: >"$tmp/index.txt"
echo 1005 >"$tmp/serial"
SAN=expired@example.org openssl ca -batch -config "$tmp/ext.cnf" \
  -name ca_cmd -cert signed-ca.pem -keyfile signed-ca.key \
  -startdate 20000101000000Z -enddate 20010101000000Z -extfile "$tmp/ext.cnf" \
  -extensions leaf -notext -in "$tmp/expired.csr" -out signed-expired.pem \
  2>/dev/null

# The content: a MIME entity with CRLF line ends, signed as bytes.
printf 'Content-Type: text/plain; charset=us-ascii\r\n\r\nHello from OpenSSL.\r\n' \
  >signed-content.txt

# sign OUT SIGNER-NAME EXTRA-ARGS...
sign() {
  local out=$1 who=$2
  shift 2
  openssl cms -sign -binary -in signed-content.txt -outform DER \
    -signer "signed-$who.pem" -inkey "signed-$who.key" "$@" -out "$out"
}
sign signed-rsa-detached.der rsa
sign signed-rsa-attached.der rsa -nodetach
sign signed-rsa-stream.ber rsa -nodetach -stream
sign signed-rsa-sha384.der rsa -nodetach -md sha384
sign signed-rsa-sha512-detached.der rsa -md sha512
sign signed-rsa-pss.der rsa -nodetach -keyopt rsa_padding_mode:pss
sign signed-rsa-noattr.der rsa -nodetach -noattr
sign signed-rsa-keyid.der rsa -nodetach -keyid
sign signed-rsa-nocerts.der rsa -nodetach -nocerts
sign signed-ec.der ec -nodetach
sign signed-ec-stream.ber ec -stream
sign signed-ec384.der ec384 -nodetach -md sha384
# No signed-ed.der: OpenSSL 3.0's cms cannot sign with Ed25519 ("no
# default digest"; with -md sha512 "invalid digest" in the EdDSA
# provider). signed-ed.pem/.key are kept for postseal-made messages.
sign signed-expired.der expired -nodetach
sign signed-tls.der tls -nodetach
openssl cms -sign -binary -in signed-content.txt -outform DER -nodetach \
  -signer signed-rsa.pem -inkey signed-rsa.key \
  -signer signed-ec.pem -inkey signed-ec.key -out signed-two.der

echo "made: $(ls signed-* | tr '\n' ' ')"
