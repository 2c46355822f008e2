"""`postseal keygen`: DKIM keys and the TXT record to publish, checked
against other implementations.

For RSA and Ed25519: the key file is PKCS#8 PEM with mode 0600 that
`openssl pkey` reads; a second run refuses to overwrite it (non-zero exit,
file unchanged); the zone-file line on stdout is parsed (owner name,
character-strings of at most 255 octets) and the record joined from it
is the public half of the key. Then a message signed by Debian's
python3-dkim (`dkim.sign`) with the private key verifies with
`dkim.verify` against the printed record, handed in through dnsfunc (no
DNS); tampered mail and a foreign key's record do not. Bad arguments are
usage errors (exit 2, a reason, no file). Needs python3-dkim,
python3-nacl (Ed25519) and python3-cryptography (scripts/setup.sh
installs them); fails without them, so a missing package cannot pass."""

import base64
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import POSTSEAL, check, run_tests  # noqa: E402

import dkim  # noqa: E402
import nacl.signing  # noqa: E402,F401 (dkim's Ed25519 needs it)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

DOMAIN = "example.org"
MESSAGE = (b"From: Alice <alice@example.org>\r\n"
           b"To: bob@example.net\r\n"
           b"Subject: keygen check\r\n"
           b"Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
           b"Message-ID: <keygen-1@example.org>\r\n"
           b"\r\n"
           b"Hello Bob,\r\n\r\nthis message is signed.\r\n")
TXT_LINE = re.compile(r'^(\S+) IN TXT \(((?: "(?:[^"\\]|\\.)*")+) \)$')


def keygen(*args):
    """Runs postseal keygen; returns (rc, stdout, stderr)."""
    r = subprocess.run([POSTSEAL, "keygen"] + list(args),
                       capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout, r.stderr


def parse_zone_line(out):
    """The one zone-file line keygen prints -> (owner, [strings])."""
    lines = out.splitlines()
    check(len(lines) == 1, f"one line on stdout: {out!r}")
    m = TXT_LINE.match(lines[0])
    check(m is not None, f"zone-file TXT line: {lines[0]!r}")
    strings = [re.sub(r"\\(.)", r"\1", s)
               for s in re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(2))]
    for s in strings:
        check(0 < len(s.encode()) <= 255,
              f"character-string of {len(s)} octets (want 1..255)")
    return m.group(1), strings


def record_tags(record):
    """"v=DKIM1; k=rsa; p=..." -> {"v": "DKIM1", ...} (RFC 6376 §3.2)."""
    tags = {}
    for part in record.split(";"):
        if part.strip():
            k, _, v = part.partition("=")
            tags[k.strip()] = v.strip()
    return tags


def dnsfunc_for(owner, record):
    """A dnsfunc for dkim.verify that knows one TXT record."""
    def dnsfunc(name, timeout=5):
        want = owner.rstrip(".").lower().encode()
        if name.rstrip(b".").lower() == want:
            return record.encode()
        return None
    return dnsfunc


class Made:
    """One key made by keygen in a fresh directory."""

    def __init__(self, selector, *extra, domain=DOMAIN):
        self.tmp = tempfile.mkdtemp(prefix="postseal-keygen-")
        self.selector = selector
        self.path = os.path.join(self.tmp, f"{domain}.{selector}.key")
        rc, self.out, self.err = keygen("--domain", domain, "--selector",
                                        selector, "--dir", self.tmp, *extra)
        check(rc == 0, f"keygen {selector} {extra}: exit {rc}\n{self.err}")
        check(os.path.exists(self.path), f"key written to {self.path}")
        with open(self.path, "rb") as f:
            self.pem = f.read()
        self.owner, self.strings = parse_zone_line(self.out)
        self.record = "".join(self.strings)
        self.tags = record_tags(self.record)

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def check_file(k):
    """Mode 0600, PKCS#8 PEM, read by openssl."""
    mode = stat.S_IMODE(os.stat(k.path).st_mode)
    check(mode == 0o600, f"mode {oct(mode)}, want 0o600")
    check(k.pem.startswith(b"-----BEGIN PRIVATE KEY-----\n"),
          f"PKCS#8 PEM: {k.pem[:40]!r}")
    r = subprocess.run(["openssl", "pkey", "-in", k.path, "-noout"],
                       capture_output=True, text=True, timeout=30)
    check(r.returncode == 0, f"openssl pkey reads it: {r.stderr}")


def check_printed(k, kind):
    """The owner name, the string split and the stderr hints."""
    check(k.owner == f"{k.selector}._domainkey.{DOMAIN}.",
          f"owner name: {k.owner}")
    check(k.strings[0] == f"v=DKIM1; k={kind}; ",
          f"tags before p= in the first string: {k.strings[0]!r}")
    check(k.strings[1].startswith("p="), f"p= starts a string: {k.strings}")
    check(k.tags.get("v") == "DKIM1" and k.tags.get("k") == kind,
          f"v= and k=: {k.tags}")
    real = os.path.realpath(k.path)
    check(real in k.err, f"stderr names the key file {real}: {k.err}")
    check(f'"{DOMAIN} {k.selector} {real}"' in k.err,
          f"stderr gives the dkim.keys line: {k.err}")


def check_overwrite_refused(k):
    """A second run with the same names leaves the file alone."""
    before = os.stat(k.path)
    rc, out, err = keygen("--domain", DOMAIN, "--selector", k.selector,
                          "--dir", k.tmp)
    check(rc != 0, f"second run refused: exit {rc}")
    check(out == "", f"no record printed on refusal: {out!r}")
    check(err.strip() != "", "a reason on stderr")
    with open(k.path, "rb") as f:
        check(f.read() == k.pem, "file unchanged")
    after = os.stat(k.path)
    check(after.st_ino == before.st_ino and
          after.st_mtime_ns == before.st_mtime_ns, "not rewritten")
    rc, _, _ = keygen("--domain", DOMAIN, "--selector", "other", "--out",
                      k.path)
    check(rc != 0, f"--out onto the file refused too: exit {rc}")
    with open(k.path, "rb") as f:
        check(f.read() == k.pem, "file unchanged after --out")


def check_signature(k, algorithm, privkey, other_record):
    """python3-dkim signs with the key; the printed record verifies."""
    sig = dkim.sign(MESSAGE, k.selector.encode(), DOMAIN.encode(), privkey,
                    canonicalize=(b"relaxed", b"relaxed"),
                    signature_algorithm=algorithm,
                    include_headers=[b"from", b"to", b"subject", b"date",
                                     b"message-id"])
    signed = sig + MESSAGE
    check(dkim.verify(signed, dnsfunc=dnsfunc_for(k.owner, k.record)),
          f"{algorithm.decode()} signature verifies against the record")
    tampered = signed.replace(b"is signed", b"is forged")
    check(not dkim.verify(tampered, dnsfunc=dnsfunc_for(k.owner, k.record)),
          "a changed body fails")
    check(not dkim.verify(signed, dnsfunc=dnsfunc_for(k.owner,
                                                      other_record)),
          "another key's record fails")


def test_rsa():
    k = Made("rsa2026")
    other = Made("rsa2026")  # a second key: its record must not verify
    try:
        check_file(k)
        check_printed(k, "rsa")
        pub = serialization.load_der_public_key(
            base64.b64decode(k.tags["p"]))
        priv = serialization.load_pem_private_key(k.pem, password=None)
        check(isinstance(priv, rsa.RSAPrivateKey), "an RSA key")
        check(priv.key_size == 2048, f"2048 bits by default: {priv.key_size}")
        check(pub.public_numbers() == priv.public_key().public_numbers(),
              "p= is the key's SubjectPublicKeyInfo")
        check("RSA-2048" in k.err, f"stderr names the key: {k.err}")
        check(len(k.strings) >= 3, f"p= of RSA-2048 split: {k.strings}")
        check_signature(k, b"rsa-sha256", k.pem, other.record)
        check_overwrite_refused(k)
    finally:
        k.cleanup()
        other.cleanup()


def ed25519_seed_b64(pem):
    """python3-dkim signs Ed25519 with the raw 32-byte seed in base64."""
    priv = serialization.load_pem_private_key(pem, password=None)
    check(isinstance(priv, ed25519.Ed25519PrivateKey), "an Ed25519 key")
    raw = priv.private_bytes(serialization.Encoding.Raw,
                             serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return base64.b64encode(raw), priv


def test_ed25519():
    k = Made("ed2026", "--algorithm", "ed25519")
    other = Made("ed2026", "--algorithm", "ed25519")
    try:
        check_file(k)
        check_printed(k, "ed25519")
        seed, priv = ed25519_seed_b64(k.pem)
        p = base64.b64decode(k.tags["p"])
        raw_pub = priv.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        check(p == raw_pub, "p= is the raw 32-byte public key (RFC 8463 §4)")
        check(len(k.strings) == 2, f"two strings: {k.strings}")
        check_signature(k, b"ed25519-sha256", seed, other.record)
        check_overwrite_refused(k)
    finally:
        k.cleanup()
        other.cleanup()


def test_sizes_and_paths():
    """--bits, --out, a final dot on the domain, a dotted selector."""
    tmp = tempfile.mkdtemp(prefix="postseal-keygen-")
    try:
        out = os.path.join(tmp, "custom.pem")
        rc, stdout, err = keygen("--domain", "mail.example.org.",
                                 "--selector", "2026-q4.eu", "--bits=1024",
                                 "--out", out)
        check(rc == 0, f"--bits 1024 --out: exit {rc}: {err}")
        priv = serialization.load_pem_private_key(open(out, "rb").read(),
                                                  password=None)
        check(priv.key_size == 1024, f"1024 bits: {priv.key_size}")
        owner, _ = parse_zone_line(stdout)
        check(owner == "2026-q4.eu._domainkey.mail.example.org.",
              f"final dot dropped once: {owner}")
        check('"mail.example.org 2026-q4.eu ' in err,
              f"config line without the final dot: {err}")
        rc, stdout, err = keygen("--domain", DOMAIN, "--selector", "big",
                                 "--bits", "4096", "--dir", tmp)
        check(rc == 0, f"--bits 4096: exit {rc}: {err}")
        _, strings = parse_zone_line(stdout)
        check(len(strings) >= 4 and all(len(s) <= 255 for s in strings),
              f"RSA-4096 p= in strings of at most 255: "
              f"{[len(s) for s in strings]}")
        rc, _, err = keygen("--domain", DOMAIN, "--selector", "s",
                            "--dir", os.path.join(tmp, "missing"))
        check(rc == 1, f"a missing directory fails (exit 1): {rc}")
        check("missing" in err, f"and says where: {err}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


BAD_ARGS = [
    # (label, arguments, a piece of the reason)
    ("no arguments", [], "required"),
    ("no selector", ["--domain", DOMAIN], "required"),
    ("no domain", ["--selector", "s"], "required"),
    ("domain value missing", ["--selector", "s", "--domain"], "needs a value"),
    ("leading hyphen", ["--domain", "-x.example.org", "--selector", "s"],
     "not a domain"),
    ("trailing hyphen", ["--domain", "x-.example.org", "--selector", "s"],
     "not a domain"),
    ("empty label", ["--domain", "a..example.org", "--selector", "s"],
     "not a domain"),
    ("underscore in domain", ["--domain", "a_b.example.org", "--selector",
                              "s"], "not a domain"),
    ("slash in domain", ["--domain", "../../etc", "--selector", "s"],
     "not a domain"),
    ("label over 63", ["--domain", "a" * 64 + ".org", "--selector", "s"],
     "not a domain"),
    ("empty domain", ["--domain", "", "--selector", "s"], "not a domain"),
    ("underscore in selector", ["--domain", DOMAIN, "--selector", "s_1"],
     "not a selector"),
    ("slash in selector", ["--domain", DOMAIN, "--selector", "a/b"],
     "not a selector"),
    ("selector trailing dot", ["--domain", DOMAIN, "--selector", "s."],
     "not a selector"),
    ("name too long", ["--domain", ".".join(["a" * 60] * 4), "--selector",
                       "s"], "longer than"),
    ("unknown algorithm", ["--domain", DOMAIN, "--selector", "s",
                           "--algorithm", "dsa"], "unknown algorithm"),
    ("bits too few", ["--domain", DOMAIN, "--selector", "s", "--bits",
                      "512"], "--bits"),
    ("bits too many", ["--domain", DOMAIN, "--selector", "s", "--bits",
                       "100000"], "--bits"),
    ("bits not a number", ["--domain", DOMAIN, "--selector", "s", "--bits",
                           "2k"], "--bits"),
    ("bits for ed25519", ["--domain", DOMAIN, "--selector", "s",
                          "--algorithm", "ed25519", "--bits", "2048"],
     "rsa keys only"),
    ("out and dir", ["--domain", DOMAIN, "--selector", "s", "--out", "k",
                     "--dir", "."], "exclude"),
    ("unknown option", ["--domain", DOMAIN, "--selector", "s", "--force"],
     "unknown option"),
    ("extra argument", ["--domain", DOMAIN, "--selector", "s", "extra"],
     "unexpected argument"),
]


def test_bad_args():
    tmp = tempfile.mkdtemp(prefix="postseal-keygen-")
    try:
        for label, args, want in BAD_ARGS:
            r = subprocess.run([POSTSEAL, "keygen"] + args, cwd=tmp,
                               capture_output=True, text=True, timeout=30)
            check(r.returncode == 2,
                  f"{label}: exit {r.returncode}, want 2: {r.stderr}")
            check(want in r.stderr,
                  f"{label}: stderr {r.stderr!r}, want {want!r}")
            check("usage: postseal keygen" in r.stderr,
                  f"{label}: usage printed: {r.stderr!r}")
            check(r.stdout == "", f"{label}: nothing on stdout")
            check(os.listdir(tmp) == [], f"{label}: no file made: "
                  f"{os.listdir(tmp)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_help():
    rc, out, _ = keygen("--help")
    check(rc == 0 and "usage: postseal keygen" in out, f"--help: {rc} {out}")
    r = subprocess.run([POSTSEAL, "help"], capture_output=True, text=True,
                       timeout=30)
    check("postseal keygen --domain" in r.stdout,
          f"postseal help lists keygen: {r.stdout}")


if __name__ == "__main__":
    sys.exit(run_tests([test_rsa,
                        test_ed25519,
                        test_sizes_and_paths,
                        test_bad_args,
                        test_help]))
