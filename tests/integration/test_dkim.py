"""DKIM end to end with Debian's python3-dkim as the peer.

Signing: postseald relays mail from 127.0.0.1 (mynetworks) for
example.test, dual-signed with RSA-2048 and Ed25519 keys made by openssl;
a Python sink takes the mail and python3-dkim verifies every signature
(both canonicalisations; folded headers, 8-bit, empty and trailing-blank
bodies). Over-signing: a second From added after signing breaks the
signature. Rotation: a key with a future not_before does not sign until
a reload after its time.

Verification: postseald takes mail from a client outside mynetworks for
a local domain; the senders' keys are served by nsd on loopback; the
Maildir copy carries an Authentication-Results field with the verdicts:
python3-dkim signatures pass (RSA, Ed25519, simple and relaxed), the RFC
8463 Appendix A example passes, the RFC 6376 Appendix A example fails (its
known bad body hash), and each bad input gets its verdict: body or From
changed, l= with appended content, rsa-sha1, a 512-bit key, a revoked key,
a record that is not a key, no record, malformed tags, a key lookup that
times out. Every wait is bounded; everything on 127.0.0.1."""

import base64
import email
import email.policy
import glob
import os
import re
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, SmtpSink, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
import dnsserver  # noqa: E402

import dkim  # noqa: E402  python3-dkim (Debian)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

HOST = "mx.test.example"

# RFC 8463 Appendix A: the example message with both signatures (A.3),
# and the keys (A.2). The signatures are the RFC's values (Ed25519 and
# RSA PKCS#1 v1.5 are deterministic); only the folding of the signature
# fields differs from the RFC's page layout, which relaxed header
# canonicalisation ignores.
RFC8463_MSG = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n")
RFC8463_ED_RECORD = ("v=DKIM1; k=ed25519; "
                     "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
RFC_RSA_RECORD = (
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6"
    "NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC"
    "/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kry"
    "OTIKT+l/K4w3QIDAQAB")

# RFC 6376 Appendix A.3 as printed, two spaces after "game.": its
# simple/simple body hash (bh=) is that of a one-space body, so it fails
# on the body hash with the Appendix C key. With one space (as several
# verifiers normalise it) the same signature verifies.
RFC6376_KEY = (
    "v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkM"
    "oGeLnQg1fWn7/zYtIxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/R"
    "tdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhitdY9tf6mcwGjaNBcWToI"
    "MmPSPDdQPNUYckcQ2QIDAQAB")
RFC6376_MSG = (
    b"DKIM-Signature: v=1; a=rsa-sha256; s=brisbane; d=example.com;\r\n"
    b"      c=simple/simple; q=dns/txt; i=joe@football.example.com;\r\n"
    b"      h=Received : From : To : Subject : Date : Message-ID;\r\n"
    b"      bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b"      b=AuUoFEfDxTDkHlLXSZEpZj79LICEps6eda7W3deTVFOk4yAUoqOB\r\n"
    b"        4nujc7YopdG5dWLSdNg6xNAZpOPr+kHxt1IrE+NahM6L/LbvaHut\r\n"
    b"        KVdkLLkpVaVVQPzeRDI009SO2Il5Lu7rDNH6mZckBdrIx0orEtZV\r\n"
    b"        4bmp/YzhwvcubU4=;\r\n"
    b"Received: from client1.football.example.com  [192.0.2.1]\r\n"
    b"      by submitserver.example.com with SUBMISSION;\r\n"
    b"      Fri, 11 Jul 2003 21:01:54 -0700 (PDT)\r\n"
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
    b"\r\n"
    b"Hi.\r\n"
    b"\r\n"
    b"We lost the game.  Are you hungry yet?\r\n"
    b"\r\n"
    b"Joe.\r\n")
RFC6376_MSG_1SP = RFC6376_MSG.replace(b"game.  Are", b"game. Are")


def run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


class Keys:
    """Private keys on disk (as openssl writes them) and their records."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def rsa(self, name, bits=2048):
        path = os.path.join(self.folder, name + ".key")
        if bits >= 1024:
            run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                f"rsa_keygen_bits:{bits}", "-out", path)
        else:  # openssl refuses < 512; python for the too-short key
            k = rsa.generate_private_key(65537, bits)
            with open(path, "wb") as f:
                f.write(k.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        with open(path, "rb") as f:
            pem = f.read()
        k = serialization.load_pem_private_key(pem, None)
        spki = k.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        return path, pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(
            spki).decode()

    def ed25519(self, name):
        path = os.path.join(self.folder, name + ".key")
        run("openssl", "genpkey", "-algorithm", "ed25519", "-out", path)
        with open(path, "rb") as f:
            k = serialization.load_pem_private_key(f.read(), None)
        seed = k.private_bytes(serialization.Encoding.Raw,
                               serialization.PrivateFormat.Raw,
                               serialization.NoEncryption())
        pub = k.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw)
        # python3-dkim takes the Ed25519 key as the base64 seed.
        return path, base64.b64encode(seed), (
            "v=DKIM1; k=ed25519; p=" + base64.b64encode(pub).decode())


def txt_rr(owner, text):
    """A zone-file TXT line; strings of at most 255 bytes."""
    parts = [text[i:i + 250] for i in range(0, len(text), 250)]
    return f"{owner} IN TXT " + " ".join(f'"{p}"' for p in parts) + "\n"


def zone(records):
    body = ("@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
            "@ IN NS ns\nns IN A 127.0.0.1\n")
    for owner, text in records.items():
        body += txt_rr(owner, text)
    return body


def message(frm="Alice <alice@example.test>", to="bob@dest.test",
            subject="Hello", body=b"Hello, world.\r\n", extra=b""):
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: {subject}\r\n"
            "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
            f"Message-ID: <{time.monotonic_ns()}@example.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n").encode() + extra + \
        b"\r\n" + body


def send(port, sender, rcpts, data):
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.sendmail(sender, rcpts, data)


def dkim_headers(data):
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    return msg.get_all("DKIM-Signature") or []


# ---- signing ----------------------------------------------------------


def py_verify(data, idx, dnsfunc):
    """python3-dkim's verdict on signature idx (it raises on some
    failures, such as a body hash mismatch, instead of returning False)."""
    try:
        return bool(dkim.DKIM(data).verify(idx=idx, dnsfunc=dnsfunc))
    except dkim.DKIMException:
        return False


class SignWorld:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-dkim-sign-")
        keys = Keys(os.path.join(self.tmp, "keys"))
        self.rsa_path, _, rsa_rec = keys.rsa("rsa1")
        self.ed_path, _, ed_rec = keys.ed25519("ed1")
        self.new_path, _, new_rec = keys.rsa("rsa2")
        self.records = {
            b"rsa1._domainkey.example.test.": rsa_rec.encode(),
            b"ed1._domainkey.example.test.": ed_rec.encode(),
            b"rsa2._domainkey.example.test.": new_rec.encode(),
        }
        self.sink = SmtpSink()
        self.sink.start()

    def dns(self, name, timeout=5):
        return self.records.get(name)

    def config(self, canon="relaxed/relaxed", rotate_at=None, extra=""):
        keys = [f"example.test rsa1 {self.rsa_path}",
                f"example.test ed1 {self.ed_path}"]
        if rotate_at is not None:
            keys.append(f"example.test rsa2 {self.new_path} {rotate_at}")
        return ("transports:\n"
                f"  - \"dest.test smtp:[127.0.0.1]:{self.sink.port}\"\n"
                "dkim:\n  keys:\n" +
                "".join(f"    - \"{k}\"\n" for k in keys) +
                f"  canonicalization: {canon}\n" + extra)

    def relay(self, daemon, data, sender="alice@example.test"):
        before = self.sink.count()
        send(daemon.smtp_port, sender, ["bob@dest.test"], data)
        check(wait_until(lambda: self.sink.count() > before, 20),
              "relayed message reached the sink")
        return self.sink.messages[-1][2]

    def verify_all(self, data, expect=2):
        sigs = dkim_headers(data)
        check(len(sigs) == expect, f"{expect} signatures, got {len(sigs)}")
        d = dkim.DKIM(data)
        for i in range(len(sigs)):
            try:
                ok = d.verify(idx=i, dnsfunc=self.dns)
            except dkim.ValidationError as e:
                ok = False
                sys.stderr.write(f"python3-dkim: {e}\n{data!r}\n")
            check(ok, f"python3-dkim verifies signature {i}: {sigs[i]!r}")
        return sigs

    def cleanup(self):
        self.sink.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def test_dual_signing_verified_by_python_dkim():
    w = SignWorld()
    try:
        for canon in ("relaxed/relaxed", "simple/simple", "relaxed/simple"):
            with Daemon(extra=w.config(canon)) as d:
                cases = {
                    "plain": message(),
                    "folded": message(
                        subject="A subject that is long enough to be\r\n"
                                "\tfolded over   two lines",
                        extra=b"X-Folded: one\r\n  two\t three  \r\n"),
                    "8bit": message(body="Grüße aus Köln\r\n€\r\n".encode()),
                    "empty": message(body=b""),
                    "trailing": message(body=b"text  \r\n\r\n\r\n\r\n"),
                    "wsp": message(body=b"a  \t b\t\r\n \r\nc\r\n"),
                    "subdomain": message(
                        frm="Carol <carol@mail.example.test>"),
                    "quoted": message(
                        frm='"Doe, John @ Home" <john@EXAMPLE.test>'),
                    "comment": message(frm="john@example.test (John)"),
                }
                for name, data in cases.items():
                    got = w.relay(d, data)
                    sigs = w.verify_all(got)
                    check("a=rsa-sha256" in sigs[0].replace(" ", ""),
                          f"{name}: RSA first: {sigs[0]!r}")
                    check("a=ed25519-sha256" in sigs[1].replace(" ", ""),
                          f"{name}: Ed25519 second")
                    flat = re.sub(r"\s+", "", sigs[0])
                    check(f"c={canon}" in flat, f"{name}: c={canon}: {flat}")
                    check("d=example.test;" in flat and "s=rsa1;" in flat,
                          f"{name}: d= and s=: {flat}")
                    check("l=" not in flat.split("h=")[0] and
                          ";l=" not in flat, f"{name}: no l= tag")
                    h = re.search(r"h=([^;]*)", flat).group(1).split(":")
                    check([x.lower() for x in h].count("from") == 2,
                          f"{name}: From over-signed: {h}")
                    # Over-signing: a From added after signing breaks it.
                    hdr, _, body = got.partition(b"\r\n\r\n")
                    forged = hdr + b"\r\nFrom: mallory@evil.test" + \
                        b"\r\n\r\n" + body
                    check(not py_verify(forged, 0, w.dns),
                          f"{name}: a second From fails the signature")
                    # A header nobody signed may be added.
                    extra = b"X-Added: later\r\n" + got
                    check(py_verify(extra, 1, w.dns),
                          f"{name}: an unsigned field does not matter")
                    tampered = got.replace(b"\r\n\r\n", b"\r\n\r\nX", 1)
                    check(not py_verify(tampered, 0, w.dns),
                          f"{name}: a changed body fails")
                m = d.metrics()
                check(metric_value(m, 'postseal_dkim_signatures_total'
                                   '{algorithm="rsa-sha256"}') == len(cases),
                      "RSA signatures counted")
                check(metric_value(m, 'postseal_dkim_signatures_total'
                                   '{algorithm="ed25519-sha256"}') ==
                      len(cases), "Ed25519 signatures counted")
                # No NOT_BEFORE: the age counts from the key file's mtime.
                age = metric_value(m, 'postseal_dkim_key_age_seconds{domain='
                                   '"example.test",selector="rsa1",'
                                   'algorithm="rsa-sha256"}')
                want = time.time() - os.stat(w.rsa_path).st_mtime
                check(age is not None and abs(age - want) < 120,
                      f"the key's age: {age}, want about {want:.0f}")
                check(not d.sanitizer_reports(), "no sanitizer reports")
    finally:
        w.cleanup()


def test_unsigned_without_key():
    w = SignWorld()
    try:
        with Daemon(extra=w.config()) as d:
            got = w.relay(d, message(frm="Dave <dave@other.test>"),
                          sender="dave@other.test")
            check(dkim_headers(got) == [],
                  "a From domain without keys is not signed")
            m = d.metrics()
            check(metric_value(m, "postseal_dkim_unsigned_total") == 1,
                  "counted as unsigned")
        # default_domain signs mail of other domains (not aligned).
        with Daemon(extra=w.config(extra="  default_domain: example.test\n")
                    ) as d:
            got = w.relay(d, message(frm="Dave <dave@other.test>"),
                          sender="dave@other.test")
            w.verify_all(got)
    finally:
        w.cleanup()


def test_rotation_on_reload():
    w = SignWorld()
    try:
        future = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                               time.gmtime(time.time() + 3600))
        past = time.strftime("%Y-%m-%dT%H:%M:%SZ",
                             time.gmtime(time.time() - 60))
        with Daemon(extra=w.config(rotate_at=future)) as d:
            sigs = w.verify_all(w.relay(d, message()))
            check("s=rsa1;" in re.sub(r"\s+", "", sigs[0]),
                  "before its time the new key does not sign")
            d.rewrite_config(w.config(rotate_at=past))
            d.signal(signal.SIGHUP)
            check(wait_until(lambda: "reload" in d.read_log(), 10),
                  "reloaded")
            time.sleep(0.5)
            sigs = w.verify_all(w.relay(d, message()))
            check("s=rsa2;" in re.sub(r"\s+", "", sigs[0]),
                  f"after its time the new key signs: {sigs[0]}")
            check("s=ed1;" in re.sub(r"\s+", "", sigs[1]),
                  "the Ed25519 key stays")
    finally:
        w.cleanup()


def test_bad_key_configuration_refused():
    w = SignWorld()
    try:
        bad = os.path.join(w.tmp, "notakey.pem")
        with open(bad, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nAAAA\n"
                    "-----END PRIVATE KEY-----\n")
        for line, want in (
                (f"example.test s1 {w.tmp}/missing.key", "missing.key"),
                (f"example.test s1 {bad}", "notakey.pem"),
                (f"example.test bad_selector! {w.rsa_path}", "selector"),
                (f"example.test s1 {w.rsa_path} tomorrow", "time"),
                ("example.test s1", "DOMAIN SELECTOR KEY_FILE")):
            d = Daemon(extra=f"dkim:\n  keys:\n    - \"{line}\"\n")
            try:
                d.start(wait=False)
                rc = d.proc.wait(timeout=15)
                log = d.read_log()
                check(rc != 0, f"{line!r}: refused (rc {rc})")
                check(want in log, f"{line!r}: says why: {log[-300:]!r}")
            finally:
                if d.proc is not None and d.proc.poll() is None:
                    d.proc.kill()
                d.proc = None
                d.cleanup()
    finally:
        w.cleanup()


# ---- verification -----------------------------------------------------


class VerifyWorld:
    """Senders' keys in nsd; a daemon that treats 127.0.0.1 as outside."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-dkim-verify-")
        keys = Keys(os.path.join(self.tmp, "keys"))
        _, self.rsa_pem, rsa_rec = keys.rsa("s-rsa")
        _, self.ed_seed, ed_rec = keys.ed25519("s-ed")
        _, self.short_pem, short_rec = keys.rsa("s-short", bits=512)
        recs = {
            "rsa._domainkey": rsa_rec,
            "ed._domainkey": ed_rec,
            "short._domainkey": short_rec,
            "revoked._domainkey": "v=DKIM1; k=rsa; p=",
            "notakey._domainkey": "this is not a DKIM key",
            "badkey._domainkey": "v=DKIM1; k=rsa; p=bm90IGEga2V5",
        }
        football = {"brisbane._domainkey": RFC8463_ED_RECORD,
                    "test._domainkey": RFC_RSA_RECORD}
        example = {"brisbane._domainkey": RFC6376_KEY}
        self.ns = dnsserver.Nsd({"sender.test": zone(recs),
                                 "football.example.com": zone(football),
                                 "example.com": zone(example)}).start()

    def daemon(self, dns_port=None, extra=""):
        return Daemon(
            mynetworks=["192.0.2.0/24"],
            extra=("local_domains:\n  - local.test\n"
                   "dns:\n  servers:\n"
                   f"    - 127.0.0.1:{dns_port or self.ns.port}\n"
                   "  timeout_ms: 300\n  tries: 1\n" + extra))

    def sign(self, data, selector, alg=b"rsa-sha256", **kw):
        key = self.ed_seed if alg == b"ed25519-sha256" else (
            self.short_pem if selector == b"short" else self.rsa_pem)
        return dkim.sign(data, selector, b"sender.test", key,
                         signature_algorithm=alg, **kw) + data

    def cleanup(self):
        self.ns.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


_seen = {}


def delivered_next(daemon, timeout=20):
    """The next message delivered to the Maildir of user@local.test: the
    one file not seen before (file times are too coarse to order two
    quick deliveries). The tests send one message at a time."""
    pattern = os.path.join(daemon.tmp, "mail", "local.test", "user", "new",
                           "*")
    seen = _seen.setdefault(id(daemon), set())
    fresh = []

    def arrived():
        fresh[:] = [f for f in glob.glob(pattern) if f not in seen]
        return len(fresh) > 0
    check(wait_until(arrived, timeout), "a message delivered to the Maildir")
    check(len(fresh) == 1, f"one new message, not {len(fresh)}")
    seen.add(fresh[0])
    with open(fresh[0], "rb") as fh:
        return fh.read()


def authres(data):
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    ar = msg.get_all("Authentication-Results") or []
    check(len(ar) == 1, f"one Authentication-Results field: {ar}")
    # On top of what we received (the Maildir adds Return-Path and
    # Delivered-To above it).
    check(data.index(b"Authentication-Results: ") <
          data.index(b"Received: from"),
          "Authentication-Results is above our Received:")
    return re.sub(r"\s+", " ", ar[0])


def verify_case(daemon, data):
    send(daemon.smtp_port, "someone@sender.test", ["user@local.test"], data)
    return authres(delivered_next(daemon))


def test_verify_python_dkim_signatures():
    w = VerifyWorld()
    try:
        with w.daemon() as d:
            base = message(frm="Sam <sam@sender.test>", to="user@local.test")
            for sel, alg in ((b"rsa", b"rsa-sha256"),
                             (b"ed", b"ed25519-sha256")):
                for canon in ((b"relaxed", b"relaxed"), (b"simple", b"simple"),
                              (b"relaxed", b"simple")):
                    ar = verify_case(d, w.sign(base, sel, alg,
                                               canonicalize=canon))
                    want = (f"dkim=pass (" )
                    check(ar.startswith(f"{HOST};"),
                          f"authserv-id is our host name: {ar}")
                    check(want in ar and "header.d=sender.test" in ar and
                          f"header.s={sel.decode()}" in ar and
                          f"header.a={alg.decode()}" in ar,
                          f"{sel} {canon}: pass: {ar}")
            # Both at once: two verdicts in one field.
            two = w.sign(w.sign(base, b"rsa"), b"ed", b"ed25519-sha256")
            ar = verify_case(d, two)
            check(ar.count("dkim=pass") == 2, f"two passes: {ar}")
            ar = verify_case(d, base)
            check("dkim=none" in ar, f"no signature: dkim=none: {ar}")
            # A verdict forged in our name is removed (RFC 8601 §5); one
            # by another host stays.
            forged = (f"Authentication-Results: {HOST.upper()};\r\n"
                      "\tdkim=pass header.d=bank.test\r\n"
                      "Authentication-Results: other.example; dkim=fail\r\n"
                      ).encode() + base
            send(d.smtp_port, "someone@sender.test", ["user@local.test"],
                 forged)
            got = delivered_next(d)
            check(b"bank.test" not in got and b"other.example" in got,
                  f"forged field removed, foreign one kept: {got[:600]!r}")
            check(got.count(f"Authentication-Results: {HOST}".encode()) == 1,
                  "only our own verdict carries our name")
            m = d.metrics()
            check(metric_value(m, 'postseal_dkim_verify_total'
                                  '{result="pass"}') == 8, "passes counted")
            check(metric_value(m, 'postseal_dkim_verify_total'
                                  '{result="none"}') == 2, "none counted")
            check(not d.sanitizer_reports(), "no sanitizer reports")
    finally:
        w.cleanup()


def test_rfc_examples():
    w = VerifyWorld()
    try:
        with w.daemon() as d:
            ar = verify_case(d, RFC8463_MSG)
            check(ar.count("dkim=pass") == 2 and
                  "header.a=ed25519-sha256" in ar and
                  "header.a=rsa-sha256" in ar and
                  "header.d=football.example.com" in ar,
                  f"RFC 8463 A.3: both signatures pass: {ar}")
            check("(1024-bit key)" in ar, f"key size reported: {ar}")
            ar = verify_case(d, RFC6376_MSG)
            check("dkim=fail" in ar and "body hash" in ar,
                  f"RFC 6376 A.3: the known bad body hash fails: {ar}")
            ar = verify_case(d, RFC6376_MSG_1SP)
            check("dkim=pass" in ar and "header.d=example.com" in ar and
                  "header.i=joe@football.example.com" in ar,
                  f"RFC 6376 A.3 with one space passes: {ar}")
    finally:
        w.cleanup()


def test_verify_bad_inputs():
    w = VerifyWorld()
    try:
        with w.daemon() as d:
            base = message(frm="Sam <sam@sender.test>", to="user@local.test")
            signed = w.sign(base, b"rsa")
            hdr, _, body = signed.partition(b"\r\n\r\n")
            cases = []
            cases.append(("body changed", hdr + b"\r\n\r\n" + body + b"more\r\n",
                          "dkim=fail", "body hash"))
            cases.append(("From appended",
                          hdr + b"\r\nFrom: mallory@evil.test\r\n\r\n" + body,
                          "dkim=fail", "signature"))
            over = w.sign(base, b"rsa", include_headers=[
                b"from", b"from", b"to", b"subject", b"date"])
            cases.append(("From prepended to an over-signed message",
                          b"From: mallory@evil.test\r\n" + over,
                          "dkim=fail", "signature"))
            withl = w.sign(base, b"rsa", length=True)
            cases.append(("l= with appended content",
                          withl + b"Appended by someone else.\r\n",
                          "dkim=pass", "unsigned"))
            cases.append(("rsa-sha1", w.sign(base, b"rsa", b"rsa-sha1"),
                          "dkim=fail", "rsa-sha1"))
            cases.append(("512-bit key", w.sign(base, b"short"),
                          "dkim=fail", "short"))
            for sel, result, why in ((b"revoked", "dkim=fail", "revoked"),
                                     (b"notakey", "dkim=permerror", ""),
                                     (b"badkey", "dkim=permerror", ""),
                                     (b"nosuch", "dkim=permerror", "no key")):
                data = w.sign(base, b"rsa").replace(
                    b"s=rsa;", b"s=" + sel + b";", 1)
                cases.append((f"key {sel.decode()}", data, result, why))
            sig = signed[:signed.index(b"\r\nFrom:")]
            for name, mangle in (
                    ("duplicate tag", lambda s: s.replace(b"v=1;",
                                                          b"v=1; v=1;")),
                    ("missing bh", lambda s: re.sub(rb"bh=[^;]*;", b"", s)),
                    ("missing d", lambda s: re.sub(rb" d=[^;]*;", b"", s)),
                    ("missing s", lambda s: re.sub(rb" s=[^;]*;", b"", s)),
                    ("missing b", lambda s: re.sub(rb" b=[^;]*$", b"", s)),
                    ("bad base64", lambda s: s.replace(b"bh=", b"bh=!!*")),
                    ("huge value", lambda s: s.replace(
                        b"v=1;", b"v=1; z=" + b"\r\n ".join(
                            [b"A" * 70] * 300) + b";")),
                    ("unknown algorithm", lambda s: re.sub(
                        rb"a=rsa-sha256", b"a=rsa-md5", s))):
                cases.append((name, mangle(sig) + signed[len(sig):],
                              "dkim=permerror", ""))
            for name, data, result, why in cases:
                ar = verify_case(d, data)
                check(result in ar and why in ar,
                      f"{name}: want {result} ({why}): {ar}")
            check(d.proc.poll() is None, "the daemon is still running")
            check(not d.sanitizer_reports(), "no sanitizer reports")
    finally:
        w.cleanup()


def test_key_lookup_timeout_is_temperror():
    w = VerifyWorld()
    fault = dnsserver.FaultDns(
        faults={"rsa._domainkey.sender.test": "timeout"})
    fault.start()
    try:
        with w.daemon(dns_port=fault.port) as d:
            base = message(frm="Sam <sam@sender.test>", to="user@local.test")
            start = time.monotonic()
            ar = verify_case(d, w.sign(base, b"rsa"))
            check("dkim=temperror" in ar, f"timeout: temperror: {ar}")
            check(time.monotonic() - start < 15, "answered in bounded time")
    finally:
        fault.stop()
        w.cleanup()


if __name__ == "__main__":
    sys.exit(run_tests([
        test_dual_signing_verified_by_python_dkim,
        test_unsigned_without_key,
        test_rotation_on_reload,
        test_bad_key_configuration_refused,
        test_verify_python_dkim_signatures,
        test_rfc_examples,
        test_verify_bad_inputs,
        test_key_lookup_timeout_is_temperror,
    ]))
