"""`postseal smime`: S/MIME (RFC 8551) signing, encryption, verification
and decryption, checked against OpenSSL 3's `openssl cms` both ways.

A test CA and certificates are made at test time with `openssl req`,
`openssl x509` and `openssl ca`: Alice (RSA 2048), Bob (EC P-256), both
with emailProtection and rfc822Name SANs; Carol, expired; Mallory, from
a CA nobody trusts. Then:

- postseal sign -> openssl cms -verify (multipart/signed and opaque; RSA,
  RSA-PSS, ECDSA; SHA-256 and SHA-384);
- openssl cms -sign (-nodetach and detached, -md sha256/sha384, RSA and
  EC) -> postseal smime verify;
- postseal encrypt -> openssl cms -decrypt (AES-256-GCM AuthEnvelopedData,
  AES-256-CBC, RSA-OAEP, RSA PKCS#1 v1.5, EC P-256);
- openssl cms -encrypt (-aes-256-gcm, -aes-256-cbc, with and without
  -keyopt rsa_padding_mode:oaep, EC) -> postseal smime decrypt;
- sign-then-encrypt both ways;
- every message postseal writes parses with Python's email package, with
  the structure and Content-Type parameters RFC 8551 asks for;
- bad cases: From mismatch, expired certificate, untrusted chain,
  tampered content: non-zero exit and the verdict on stdout; usage errors;
- the security review's findings through the CLI: signature wrapping
  (an opaque signature as the .p7s of another first part), From parsing
  (comments, quoted names, no From, two, lists, groups), the shared
  recipient cap (64 --to + 1 --rcpt is a usage error), inner header
  fields never spliced into the written header.

Needs /usr/bin/openssl; fails (does not skip) without it."""

import email
import email.policy
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import POSTSEAL, check, run_tests  # noqa: E402

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
TMP = tempfile.mkdtemp(prefix="postseal-smime-")

MESSAGE = (b"From: Alice <alice@example.org>\r\n"
           b"To: Bob <bob@example.net>\r\n"
           b"Subject: S/MIME check\r\n"
           b"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
           b"Message-ID: <smime-1@example.org>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n"
           b"\r\n"
           b"Hello Bob,\r\n\r\nthis is signed: caf\xc3\xa9 = coffee.\r\n")
BODY_TEXT = "this is signed: caf\u00e9 = coffee."

LEAF_EXT = """
[rsa_leaf]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection
subjectAltName = email:{email}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[ec_leaf]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, nonRepudiation, keyAgreement
extendedKeyUsage = emailProtection
subjectAltName = email:{email}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

CA_CONF = """
[ca]
default_ca = ca_default
[ca_default]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
[policy_any]
commonName = supplied
"""


def path(name):
    return os.path.join(TMP, name)


def run(args, data=None, ok=True):
    """Runs a command; returns CompletedProcess (bytes). ok: must exit 0."""
    r = subprocess.run(args, input=data, capture_output=True, timeout=120)
    if ok and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {r.returncode}: "
            f"{r.stderr.decode(errors='replace')}")
    return r


def openssl(*args, data=None, ok=True):
    return run([OPENSSL] + list(args), data=data, ok=ok)


def postseal(*args, data=None, ok=True):
    return run([POSTSEAL, "smime"] + list(args), data=data, ok=ok)


def write(name, data):
    with open(path(name), "wb") as f:
        f.write(data)
    return path(name)


def read(name):
    with open(path(name), "rb") as f:
        return f.read()


# ---- the test PKI ----

def make_ca(name):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", path(f"{name}.key"), "-out", path(f"{name}.pem"),
            "-days", "30", "-subj", f"/CN={name} test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash")


def make_leaf(name, email_addr, ca, ec=False, expired=False):
    newkey = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
              if ec else ["-newkey", "rsa:2048"])
    openssl("req", "-new", *newkey, "-nodes", "-keyout", path(f"{name}.key"),
            "-out", path(f"{name}.csr"), "-subj", f"/CN={name}")
    ext = write(f"{name}.ext", LEAF_EXT.format(email=email_addr).encode())
    section = "ec_leaf" if ec else "rsa_leaf"
    if not expired:
        openssl("x509", "-req", "-in", path(f"{name}.csr"),
                "-CA", path(f"{ca}.pem"), "-CAkey", path(f"{ca}.key"),
                "-CAcreateserial", "-days", "30", "-sha256",
                "-extfile", ext, "-extensions", section,
                "-out", path(f"{name}.pem"))
        return
    # x509 -req cannot back-date: openssl ca with fixed dates.
    cadir = path("cadir")
    os.makedirs(os.path.join(cadir, "newcerts"), exist_ok=True)
    open(os.path.join(cadir, "index.txt"), "w").close()
    with open(os.path.join(cadir, "serial"), "w") as f:
        f.write("1000\n")
    conf = write("ca.cnf", CA_CONF.format(dir=cadir).encode())
    openssl("ca", "-batch", "-config", conf, "-cert", path(f"{ca}.pem"),
            "-keyfile", path(f"{ca}.key"), "-in", path(f"{name}.csr"),
            "-out", path(f"{name}.pem"), "-notext",
            "-startdate", "20200101000000Z", "-enddate", "20200201000000Z",
            "-extfile", ext, "-extensions", section)


def setup_pki():
    check(os.path.exists(OPENSSL), "openssl is installed")
    make_ca("ca")
    make_ca("rogue")
    make_leaf("alice", "alice@example.org", "ca")
    make_leaf("bob", "bob@example.net", "ca", ec=True)
    make_leaf("carol", "carol@example.org", "ca", expired=True)
    make_leaf("mallory", "alice@example.org", "rogue")
    os.makedirs(path("certs"), exist_ok=True)
    for who in ("alice", "bob"):
        shutil.copy(path(f"{who}.pem"), path(f"certs/{who}.pem"))


# ---- helpers ----

def parse_mail(data):
    """Python's email package must read what postseal writes."""
    msg = email.message_from_bytes(data, policy=email.policy.default)
    check(not msg.defects, f"no parse defects: {msg.defects}")
    check(msg["From"] is not None and "alice@example.org" in str(msg["From"]),
          "the From header stays outside")
    check(msg["Subject"] == "S/MIME check", "the Subject stays outside")
    check(msg["MIME-Version"] == "1.0", "MIME-Version: 1.0 outside")
    return msg


def check_multipart_signed(data, micalg="sha-256"):
    msg = parse_mail(data)
    check(msg.get_content_type() == "multipart/signed",
          f"multipart/signed, got {msg.get_content_type()}")
    check(msg.get_param("protocol") == "application/pkcs7-signature",
          f"protocol param: {msg.get_param('protocol')}")
    check(msg.get_param("micalg") == micalg,
          f"micalg {msg.get_param('micalg')}, want {micalg}")
    parts = msg.get_payload()
    check(len(parts) == 2, f"two parts, got {len(parts)}")
    check(parts[0].get_content_type() == "text/plain", "the signed text")
    check(parts[0]["Content-Transfer-Encoding"] == "quoted-printable",
          "8-bit text re-encoded to quoted-printable")
    check(BODY_TEXT in parts[0].get_content(), "the text decodes back")
    sig = parts[1]
    check(sig.get_content_type() == "application/pkcs7-signature",
          f"signature part type {sig.get_content_type()}")
    check(sig.get_param("name") == "smime.p7s", "name=smime.p7s")
    check(sig.get_filename() == "smime.p7s", "filename=smime.p7s")
    check(sig.is_attachment(), "the signature is an attachment")
    check(sig["Content-Transfer-Encoding"] == "base64", "base64 signature")
    raw = sig.get_payload(decode=False)
    for line in raw.splitlines():
        check(len(line) <= 76, f"base64 line of {len(line)} characters")
    check(len(sig.get_payload(decode=True)) > 100, "signature decodes")


def check_p7m(data, smime_type):
    msg = parse_mail(data)
    check(msg.get_content_type() == "application/pkcs7-mime",
          f"application/pkcs7-mime, got {msg.get_content_type()}")
    check(msg.get_param("smime-type") == smime_type,
          f"smime-type {msg.get_param('smime-type')}, want {smime_type}")
    check(msg.get_param("name") == "smime.p7m", "name=smime.p7m")
    check(msg.get_filename() == "smime.p7m", "filename=smime.p7m")
    check(msg["Content-Transfer-Encoding"] == "base64", "base64 body")
    check(len(msg.get_payload(decode=True)) > 100, "the body decodes")


def text_of(entity):
    """The decoded text of a text/plain entity (bytes)."""
    msg = email.message_from_bytes(entity, policy=email.policy.default)
    return msg.get_content()


def sign(who, *extra, data=MESSAGE):
    return postseal("sign", "--key", path(f"{who}.key"), "--cert",
                    path(f"{who}.pem"), *extra, data=data).stdout


def verify_lines(out):
    return [line for line in out.decode().splitlines() if line.strip()]


# ---- postseal signs, OpenSSL verifies ----

def test_sign_openssl_verify():
    cases = [
        ("rsa", "alice", [], "sha-256"),
        ("rsa-pss", "alice", ["--pss"], "sha-256"),
        ("rsa sha384", "alice", ["--digest", "sha384"], "sha-384"),
        ("ecdsa", "bob", [], "sha-256"),
        ("ecdsa sha512", "bob", ["--digest", "sha512"], "sha-512"),
    ]
    for label, who, extra, micalg in cases:
        detached = sign(who, *extra, data=MESSAGE)
        check_multipart_signed(detached, micalg)
        f = write(f"signed-{who}.eml", detached)
        r = openssl("cms", "-verify", "-in", f, "-CAfile", path("ca.pem"),
                    "-purpose", "smimesign", ok=False)
        check(r.returncode == 0,
              f"{label} detached: openssl cms -verify: {r.stderr!r}")
        check(BODY_TEXT in text_of(r.stdout), f"{label}: content out")
        opaque = sign(who, "--opaque", *extra)
        check_p7m(opaque, "signed-data")
        f = write(f"opaque-{who}.eml", opaque)
        r = openssl("cms", "-verify", "-in", f, "-CAfile", path("ca.pem"),
                    ok=False)
        check(r.returncode == 0,
              f"{label} opaque: openssl cms -verify: {r.stderr!r}")
        check(BODY_TEXT in text_of(r.stdout), f"{label} opaque: content")


def test_sign_verify_round_trip():
    for who, extra in (("alice", []), ("alice", ["--pss"]), ("bob", [])):
        for opaque in ([], ["--opaque"]):
            signed = sign(who, *extra, *opaque)
            r = postseal("verify", "--CAfile", path("ca.pem"), "--any-from",
                         "--out", path("inner.eml"), data=signed, ok=False)
            check(r.returncode == 0,
                  f"{who} {extra} {opaque}: {r.stdout!r} {r.stderr!r}")
            lines = verify_lines(r.stdout)
            check(len(lines) == 1 and lines[0].startswith("pass "),
                  f"one passing signer: {lines}")
            email_addr = "alice@example.org" if who == "alice" \
                else "bob@example.net"
            check(email_addr in lines[0], f"signer address in {lines[0]}")
            check(BODY_TEXT in text_of(read("inner.eml")), "inner entity")


# ---- OpenSSL signs, postseal verifies ----

ENTITY = (b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
          b"Signed by OpenSSL.\r\n")


def openssl_sign(who, *extra):
    entity = write("entity.txt", ENTITY)
    return openssl("cms", "-sign", "-in", entity, "-signer",
                   path(f"{who}.pem"), "-inkey", path(f"{who}.key"),
                   "-from", "alice@example.org" if who != "bob"
                   else "bob@example.net",
                   "-to", "someone@example.com", "-subject", "openssl",
                   *extra).stdout


def test_openssl_sign_postseal_verify():
    cases = [
        ("detached sha256", "alice", ["-md", "sha256"]),
        ("detached sha384", "alice", ["-md", "sha384"]),
        ("opaque sha256", "alice", ["-nodetach", "-md", "sha256"]),
        ("opaque sha384", "alice", ["-nodetach", "-md", "sha384"]),
        ("ec detached", "bob", ["-md", "sha256"]),
        ("ec opaque", "bob", ["-nodetach", "-md", "sha384"]),
        ("rsa-pss max salt", "alice", ["-keyopt", "rsa_padding_mode:pss"]),
        ("rsa-pss digest salt", "alice",
         ["-keyopt", "rsa_padding_mode:pss",
          "-keyopt", "rsa_pss_saltlen:digest"]),
    ]
    for label, who, extra in cases:
        signed = openssl_sign(who, *extra)
        r = postseal("verify", "--CAfile", path("ca.pem"),
                     "--out", path("inner.eml"), data=signed, ok=False)
        check(r.returncode == 0,
              f"{label}: exit {r.returncode}: {r.stdout!r} {r.stderr!r}")
        lines = verify_lines(r.stdout)
        check(len(lines) == 1 and lines[0].startswith("pass "),
              f"{label}: {lines}")
        check(b"Signed by OpenSSL." in read("inner.eml"), f"{label}: content")


# ---- postseal encrypts, OpenSSL decrypts ----

def test_encrypt_openssl_decrypt():
    cases = [
        ("gcm rsa-oaep", "alice", ["--cipher", "aes-256-gcm"],
         "authEnveloped-data"),
        ("gcm128 rsa-oaep", "alice", ["--cipher", "aes-128-gcm"],
         "authEnveloped-data"),
        ("cbc rsa-oaep", "alice", ["--cipher", "aes-256-cbc"],
         "enveloped-data"),
        ("gcm rsa pkcs1", "alice", ["--pkcs1"], "authEnveloped-data"),
        ("cbc rsa pkcs1 ski", "alice",
         ["--cipher", "aes-256-cbc", "--pkcs1", "--ski"], "enveloped-data"),
        ("gcm ec p-256", "bob", [], "authEnveloped-data"),
        ("cbc ec p-256", "bob", ["--cipher", "aes-256-cbc"], "enveloped-data"),
    ]
    for label, who, extra, smime_type in cases:
        enc = postseal("encrypt", "--to", path(f"{who}.pem"), *extra,
                       data=MESSAGE, ok=False)
        check(enc.returncode == 0, f"{label}: encrypt: {enc.stderr!r}")
        check_p7m(enc.stdout, smime_type)
        f = write("enc.eml", enc.stdout)
        r = openssl("cms", "-decrypt", "-in", f, "-recip", path(f"{who}.pem"),
                    "-inkey", path(f"{who}.key"), ok=False)
        check(r.returncode == 0, f"{label}: openssl cms -decrypt: "
              f"{r.stderr.decode(errors='replace')}")
        check(BODY_TEXT in text_of(r.stdout), f"{label}: plaintext")


def test_encrypt_certstore():
    enc = postseal("encrypt", "--certs", path("certs"), "--rcpt",
                   "ALICE@example.org", "--rcpt", "bob@example.net",
                   data=MESSAGE, ok=False)
    check(enc.returncode == 0, f"encrypt via the store: {enc.stderr!r}")
    for who in ("alice", "bob"):
        r = postseal("decrypt", "--key", path(f"{who}.key"), "--cert",
                     path(f"{who}.pem"), data=enc.stdout, ok=False)
        check(r.returncode == 0, f"{who} decrypts: {r.stderr!r}")
        check(BODY_TEXT in email.message_from_bytes(
            r.stdout, policy=email.policy.default).get_content(),
            f"{who}: plaintext")
    r = postseal("encrypt", "--certs", path("certs"), "--rcpt",
                 "nobody@example.org", data=MESSAGE, ok=False)
    check(r.returncode == 1 and b"nobody@example.org" in r.stderr,
          f"unknown recipient: {r.returncode} {r.stderr!r}")


# ---- OpenSSL encrypts, postseal decrypts ----

def test_openssl_encrypt_postseal_decrypt():
    cases = [
        ("gcm rsa pkcs1", "alice", ["-aes-256-gcm"], [], True),
        ("gcm rsa oaep", "alice", ["-aes-256-gcm"],
         ["-keyopt", "rsa_padding_mode:oaep"], True),
        ("gcm rsa oaep sha256", "alice", ["-aes-256-gcm"],
         ["-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256",
          "-keyopt", "rsa_mgf1_md:sha256"], True),
        ("cbc rsa pkcs1", "alice", ["-aes-256-cbc"], [], False),
        ("cbc rsa oaep", "alice", ["-aes-256-cbc"],
         ["-keyopt", "rsa_padding_mode:oaep"], False),
        ("gcm ec", "bob", ["-aes-256-gcm"], [], True),
        ("gcm ec sha256 kdf", "bob", ["-aes-128-gcm"],
         ["-keyopt", "ecdh_kdf_md:sha256"], True),
        ("cbc ec", "bob", ["-aes-128-cbc"], [], False),
    ]
    msg_in = write("plain.eml", MESSAGE)
    for label, who, cipher, keyopts, gcm in cases:
        # -keyopt applies to the -recip before it
        enc = openssl("cms", "-encrypt", "-in", msg_in, *cipher,
                      "-recip", path(f"{who}.pem"), *keyopts, ok=False)
        check(enc.returncode == 0, f"{label}: openssl cms -encrypt: "
              f"{enc.stderr.decode(errors='replace')}")
        r = postseal("decrypt", "--key", path(f"{who}.key"), "--cert",
                     path(f"{who}.pem"), data=enc.stdout, ok=False)
        check(r.returncode == 0, f"{label}: postseal decrypt exit "
              f"{r.returncode}: {r.stderr!r}")
        check(BODY_TEXT.encode("utf-8") in r.stdout
              or b"caf\xc3\xa9" in r.stdout, f"{label}: plaintext")
        check((b"not authenticated" in r.stderr) == (not gcm),
              f"{label}: the EFAIL warning only for CBC: {r.stderr!r}")
        if not gcm:
            r = postseal("decrypt", "--key", path(f"{who}.key"), "--cert",
                         path(f"{who}.pem"), "--require-signed", "--CAfile",
                         path("ca.pem"), data=enc.stdout, ok=False)
            check(r.returncode == 1 and not r.stdout,
                  f"{label}: unsigned CBC refused with --require-signed")


# ---- sign then encrypt ----

def test_sign_then_encrypt_postseal_to_openssl():
    out = sign("alice", "--encrypt-to", path("bob.pem"))
    check_p7m(out, "authEnveloped-data")
    f = write("se.eml", out)
    r = openssl("cms", "-decrypt", "-in", f, "-recip", path("bob.pem"),
                "-inkey", path("bob.key"), "-out", path("se-inner.eml"))
    inner = read("se-inner.eml")
    check(b"multipart/signed" in inner, "a signed entity inside")
    r = openssl("cms", "-verify", "-in", path("se-inner.eml"),
                "-CAfile", path("ca.pem"), ok=False)
    check(r.returncode == 0, f"openssl verifies the inner signature: "
          f"{r.stderr!r}")
    # and postseal itself, through a pipe: decrypt | verify
    d = postseal("decrypt", "--key", path("bob.key"), "--cert",
                 path("bob.pem"), data=out)
    v = postseal("verify", "--CAfile", path("ca.pem"), data=d.stdout,
                 ok=False)
    check(v.returncode == 0 and verify_lines(v.stdout)[0].startswith("pass"),
          f"decrypt | verify: {v.stdout!r} {v.stderr!r}")
    # --require-signed writes what the signature covers, not its wrapper
    d = postseal("decrypt", "--key", path("bob.key"), "--cert",
                 path("bob.pem"), "--require-signed", "--CAfile",
                 path("ca.pem"), data=out)
    msg = parse_mail(d.stdout)
    check(msg.get_content_type() == "text/plain" and
          BODY_TEXT in msg.get_content(),
          f"--require-signed: the signed text itself: {d.stdout[:300]!r}")
    check(b"pkcs7-signature" not in d.stdout, "no signature part written")


def test_sign_then_encrypt_openssl_to_postseal():
    signed = openssl_sign("alice", "-md", "sha256")
    f = write("os.eml", signed)
    enc = openssl("cms", "-encrypt", "-in", f, "-aes-256-cbc", "-from",
                  "alice@example.org", "-recip", path("bob.pem")).stdout
    r = postseal("decrypt", "--key", path("bob.key"), "--cert",
                 path("bob.pem"), "--require-signed", "--CAfile",
                 path("ca.pem"), data=enc, ok=False)
    check(r.returncode == 0, f"signed CBC content accepted: {r.stderr!r}")
    check(b"pass " in r.stderr, f"the inner signer's verdict: {r.stderr!r}")
    out = r.stdout
    check(b"Signed by OpenSSL." in out and b"pkcs7-signature" not in out,
          f"the signed entity itself is written: {out!r}")
    # openssl encrypted the whole signed message, header and all: of the
    # inner header only Content-* fields may reach the written one
    check(out.count(b"\nFrom:") + out.startswith(b"From:") == 1 and
          b"Subject: openssl" not in out,
          f"one From, the outer one; no inner Subject: {out!r}")
    # without --require-signed the signed entity is written, and verifies
    r = postseal("decrypt", "--key", path("bob.key"), "--cert",
                 path("bob.pem"), data=enc, ok=False)
    v = postseal("verify", "--CAfile", path("ca.pem"), "--from",
                 "alice@example.org", data=r.stdout, ok=False)
    check(v.returncode == 0, f"then verify: {v.stdout!r} {v.stderr!r}")


# ---- failures ----

def test_bad_signatures():
    signed = sign("alice")
    cases = []
    # From mismatch: the message claims Bob.
    cases.append(("from mismatch",
                  signed.replace(b"From: Alice <alice@example.org>",
                                 b"From: Bob <bob@example.net>", 1),
                  [], "from-mismatch"))
    # Tampered: one byte of the signed text.
    cases.append(("tampered", signed.replace(b"Hello Bob", b"Hello Rob", 1),
                  ["--any-from"], None))
    # Expired signer (OpenSSL signs with it without complaint).
    carol = openssl("cms", "-sign", "-in", write("e.txt", ENTITY),
                    "-signer", path("carol.pem"), "-inkey",
                    path("carol.key"), "-from", "carol@example.org").stdout
    cases.append(("expired", carol, [], "expired"))
    # A chain to a CA we do not trust.
    mallory = openssl("cms", "-sign", "-in", write("m.txt", ENTITY),
                      "-signer", path("mallory.pem"), "-inkey",
                      path("mallory.key"), "-from",
                      "alice@example.org").stdout
    cases.append(("untrusted", mallory, [], "untrusted"))
    for label, data, extra, verdict in cases:
        r = postseal("verify", "--CAfile", path("ca.pem"), *extra,
                     data=data, ok=False)
        check(r.returncode == 1, f"{label}: exit {r.returncode}, want 1")
        lines = verify_lines(r.stdout)
        check(len(lines) == 1 and not lines[0].startswith("pass"),
              f"{label}: a failing verdict line: {lines} {r.stderr!r}")
        if verdict is not None:
            check(lines[0].startswith(verdict + " "),
                  f"{label}: verdict {lines[0]!r}, want {verdict}")
        else:
            check(lines[0].split()[0] in ("bad-digest", "bad-signature"),
                  f"{label}: {lines[0]!r}")
        check(b"verification failed" in r.stderr, f"{label}: stderr says so")


def test_not_smime_and_garbage():
    r = postseal("verify", "--CAfile", path("ca.pem"), data=MESSAGE, ok=False)
    check(r.returncode == 1 and b"not a signed message" in r.stderr,
          f"plain message: {r.returncode} {r.stderr!r}")
    bad = sign("alice").replace(b"Content-Transfer-Encoding: base64\r\n"
                                b"Content-Disposition: attachment; "
                                b"filename=\"smime.p7s\"\r\n\r\n",
                                b"Content-Transfer-Encoding: base64\r\n"
                                b"Content-Disposition: attachment; "
                                b"filename=\"smime.p7s\"\r\n\r\n*!*\r\n", 1)
    r = postseal("verify", "--CAfile", path("ca.pem"), data=bad, ok=False)
    check(r.returncode == 1 and b"base64" in r.stderr,
          f"bad base64: {r.returncode} {r.stderr!r}")
    r = postseal("decrypt", "--key", path("alice.key"), "--cert",
                 path("alice.pem"), data=MESSAGE, ok=False)
    check(r.returncode == 1 and b"not an encrypted message" in r.stderr,
          f"decrypt of plain: {r.stderr!r}")
    enc = postseal("encrypt", "--to", path("bob.pem"), data=MESSAGE).stdout
    r = postseal("decrypt", "--key", path("alice.key"), "--cert",
                 path("alice.pem"), data=enc, ok=False)
    check(r.returncode == 1 and not r.stdout,
          f"wrong key: exit {r.returncode}, {r.stderr!r}")
    r = postseal("sign", "--key", path("alice.key"), "--cert",
                 path("bob.pem"), data=MESSAGE, ok=False)
    check(r.returncode == 1 and b"is not the certificate" in r.stderr,
          f"key and cert mismatch: {r.stderr!r}")


def test_usage():
    for args, want in [([], 2), (["frob"], 2), (["--help"], 0),
                       (["sign", "--help"], 0), (["sign"], 2),
                       (["sign", "--key"], 2),
                       (["encrypt", "--cipher", "rot13", "--to", "x"], 2),
                       (["verify"], 2), (["verify", "--bogus"], 2),
                       (["encrypt", "--rcpt", "a@b"], 2)]:
        r = run([POSTSEAL, "smime"] + args, ok=False)
        check(r.returncode == want,
              f"smime {' '.join(args)}: exit {r.returncode}, want {want}")
        if want == 2:
            check(b"usage:" in r.stderr, f"{args}: usage on stderr")
    r = run([POSTSEAL, "smime", "sign", "--key", path("nope.key"), "--cert",
             path("alice.pem")], data=MESSAGE, ok=False)
    check(r.returncode == 1 and b"nope.key" in r.stderr,
          f"missing key file named: {r.stderr!r}")


# ---- review findings ----

def opaque_der(who, data=MESSAGE):
    """The DER of an opaque (signed-data) signature by who over data."""
    m = email.message_from_bytes(sign(who, "--opaque", data=data),
                                 policy=email.policy.default)
    return m.get_payload(decode=True)


def multipart_signed(first_part, der, header=b"From: alice@example.org\r\n"
                     b"To: bob@example.net\r\nSubject: URGENT\r\n"):
    import base64
    b64 = base64.encodebytes(der).replace(b"\n", b"\r\n")
    return (header + b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; "
            b"protocol=\"application/pkcs7-signature\"; micalg=sha-256; "
            b"boundary=\"BB\"\r\n\r\n--BB\r\n" + first_part +
            b"\r\n--BB\r\nContent-Type: application/pkcs7-signature; "
            b"name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + b64 + b"--BB--\r\n")


def test_signature_wrapping():
    """Review finding 1: an opaque signature pasted as the .p7s of a
    multipart/signed whose first part says something else."""
    der = opaque_der("alice")
    wrapped = multipart_signed(
        b"Content-Type: text/plain\r\n\r\nPlease wire 1,000,000 EUR "
        b"to IBAN XX00 EVIL today. -- Alice", der)
    out = path("wrap-out.eml")
    if os.path.exists(out):
        os.unlink(out)
    r = postseal("verify", "--CAfile", path("ca.pem"), "--out", out,
                 data=wrapped, ok=False)
    check(r.returncode == 1, f"wrapped: exit {r.returncode}, want 1")
    check(not any(line.startswith("pass") for line in verify_lines(r.stdout)),
          f"no pass verdict: {r.stdout!r}")
    check(b"both encapsulated and detached" in r.stderr,
          f"wrapped: the reason: {r.stderr!r}")
    check(not os.path.exists(out) or os.path.getsize(out) == 0,
          "no content written")
    # the same wrapped inside encryption: decrypt --require-signed refuses
    enc = postseal("encrypt", "--to", path("bob.pem"), data=wrapped).stdout
    r = postseal("decrypt", "--key", path("bob.key"), "--cert",
                 path("bob.pem"), "--require-signed", "--CAfile",
                 path("ca.pem"), data=enc, ok=False)
    check(r.returncode == 1 and not r.stdout and b"pass " not in r.stderr,
          f"decrypt --require-signed of a wrapped signature: "
          f"{r.returncode} {r.stdout[:100]!r} {r.stderr!r}")


def test_from_parsing():
    """Review finding 2: the From address is parsed as RFC 5322 says; a
    missing, repeated or unparseable From fails the From check."""
    pad = b"x" * 300
    cases = [
        # label, From lines, signer, extra args, want exit, want verdict
        ("comment holding bob's address",
         b"From: alice@example.org (<bob@example.net>)\r\n", "bob", [], 1,
         "from-mismatch"),
        ("quoted name holding bob's address",
         b"From: \"<bob@example.net>\" <alice@example.org>\r\n", "bob", [],
         1, "from-mismatch"),
        ("300-char comment, right signer",
         b"From: alice@example.org (" + pad + b")\r\n", "alice", [], 0,
         "pass"),
        ("300-char comment, wrong signer",
         b"From: alice@example.org (" + pad + b")\r\n", "bob", [], 1,
         "from-mismatch"),
        ("no From", b"", "bob", [], 1, "from-mismatch"),
        ("two From fields", b"From: bob@example.net\r\n"
         b"From: alice@example.org\r\n", "bob", [], 1, "from-mismatch"),
        ("a list", b"From: bob@example.net, alice@example.org\r\n", "bob",
         [], 1, "from-mismatch"),
        ("a group", b"From: staff: bob@example.net;\r\n", "bob", [], 1,
         "from-mismatch"),
        ("folded name-addr", b"From: \"Bob B.\"\r\n <bob@example.net>\r\n",
         "bob", [], 0, "pass"),
        ("no From, --any-from", b"", "bob", ["--any-from"], 0, "pass"),
        ("two From fields, --from", b"From: bob@example.net\r\n"
         b"From: alice@example.org\r\n", "bob", ["--from", "bob@example.net"],
         0, "pass"),
    ]
    for label, froms, who, extra, want_rc, verdict in cases:
        msg = (froms + b"To: carol@example.org\r\nSubject: from check\r\n"
               b"Content-Type: text/plain\r\n\r\nhello\r\n")
        signed = sign(who, data=msg)
        r = postseal("verify", "--CAfile", path("ca.pem"), *extra,
                     data=signed, ok=False)
        lines = verify_lines(r.stdout)
        check(r.returncode == want_rc and len(lines) == 1 and
              lines[0].startswith(verdict + " "),
              f"{label}: exit {r.returncode} {lines}, want {want_rc} "
              f"{verdict} ({r.stderr!r})")
    # decrypt --require-signed checks the outer From the same way
    msg = (b"To: carol@example.org\r\nSubject: no from\r\n"
           b"Content-Type: text/plain\r\n\r\nhello\r\n")
    enc = sign("alice", "--encrypt-to", path("bob.pem"), data=msg)
    r = postseal("decrypt", "--key", path("bob.key"), "--cert",
                 path("bob.pem"), "--require-signed", "--CAfile",
                 path("ca.pem"), data=enc, ok=False)
    check(r.returncode == 1 and not r.stdout and
          b"from-mismatch" in r.stderr,
          f"decrypt --require-signed without From: {r.returncode} "
          f"{r.stderr!r}")
    r = postseal("decrypt", "--key", path("bob.key"), "--cert",
                 path("bob.pem"), "--require-signed", "--CAfile",
                 path("ca.pem"), "--any-from", data=enc, ok=False)
    check(r.returncode == 0 and b"hello" in r.stdout,
          f"... with --any-from: {r.returncode} {r.stderr!r}")


def test_recipient_cap():
    """Review finding 7: --to and --rcpt share one array of 64."""
    to = []
    for _ in range(64):
        to += ["--to", path("bob.pem")]
    for args in (to + ["--certs", path("certs"), "--rcpt", "bob@example.net"],
                 ["--certs", path("certs"), "--rcpt", "bob@example.net"] + to):
        r = run([POSTSEAL, "smime", "encrypt"] + args, data=MESSAGE, ok=False)
        check(r.returncode == 2 and b"more than 64 recipients" in r.stderr,
              f"64 --to + 1 --rcpt: exit {r.returncode} {r.stderr[-200:]!r}")
    r = run([POSTSEAL, "smime", "sign", "--key", path("alice.key"), "--cert",
             path("alice.pem"), "--certs", path("certs"), "--rcpt",
             "bob@example.net"] + [a.replace("--to", "--encrypt-to")
                                   for a in to],
            data=MESSAGE, ok=False)
    check(r.returncode == 2, f"sign: 64 --encrypt-to + 1 --rcpt: exit "
          f"{r.returncode}")
    r = run([POSTSEAL, "smime", "encrypt"] + to, data=MESSAGE, ok=False)
    check(r.returncode == 0, f"64 --to: exit {r.returncode} {r.stderr!r}")


def test_inner_header_not_spliced():
    """Review finding 8: an inner From: or Authentication-Results: never
    reaches the written header; --require-signed writes only what the
    signature covers."""
    signed = sign("alice")
    inner = (b"From: ceo@example.org\r\n"
             b"Authentication-Results: gw.example.org; smime=pass\r\n"
             + signed[signed.index(b"MIME-Version:"):])
    f = write("inner.eml", inner)
    for cipher in ("-aes-256-gcm", "-aes-256-cbc"):
        enc = openssl("cms", "-encrypt", "-in", f, cipher, "-from",
                      "alice@example.org", "-subject", "outer",
                      "-recip", path("bob.pem")).stdout
        for extra in ([], ["--require-signed", "--CAfile", path("ca.pem")]):
            r = postseal("decrypt", "--key", path("bob.key"), "--cert",
                         path("bob.pem"), *extra, data=enc, ok=False)
            label = f"{cipher} {extra[:1]}"
            check(r.returncode == 0, f"{label}: {r.stderr!r}")
            out = r.stdout
            head = out[:out.index(b"\r\n\r\n")]
            check(b"ceo@example.org" not in head and
                  b"Authentication-Results" not in head,
                  f"{label}: inner fields spliced: {head!r}")
            check(b"From: alice@example.org" in head, f"{label}: outer From")
            if extra:
                msg = email.message_from_bytes(out,
                                               policy=email.policy.default)
                check(msg.get_content_type() == "text/plain" and
                      BODY_TEXT in msg.get_content(),
                      f"{label}: the signed text itself")


def main():
    try:
        setup_pki()
        return run_tests([
            test_usage,
            test_sign_verify_round_trip,
            test_sign_openssl_verify,
            test_openssl_sign_postseal_verify,
            test_encrypt_openssl_decrypt,
            test_encrypt_certstore,
            test_openssl_encrypt_postseal_decrypt,
            test_sign_then_encrypt_postseal_to_openssl,
            test_sign_then_encrypt_openssl_to_postseal,
            test_bad_signatures,
            test_not_smime_and_garbage,
            test_signature_wrapping,
            test_from_parsing,
            test_recipient_cap,
            test_inner_header_not_spliced,
        ])
    finally:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
