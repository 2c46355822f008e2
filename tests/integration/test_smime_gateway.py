"""The S/MIME gateway stage, end to end, with openssl cms as the peer.

Out: postseald relays mail from 127.0.0.1 (mynetworks) for example.test
senders to a scripted next hop. With smime.sign for example.test and
smime.certs holding the recipients' certificates, the message that
reaches the next hop is signed (multipart/signed, or signed-data when
opaque) and, when every recipient has a certificate, encrypted
(authEnveloped-data, AES-GCM; enveloped-data with AES-CBC): each
recipient (RSA and EC P-256) and the sender decrypt it with `openssl cms
-decrypt`, and the inner signature verifies with `openssl cms -verify`
against the test CA. if-possible with a recipient lacking a certificate
sends it signed only; required refuses it with 550 5.7.1 naming the
recipient and delivers nothing; mail the client protected itself passes
untouched when encrypted and is encrypted, not signed again, when only
signed; a key that is not the certificate's stops the start.

In: mail from an outside client (not in mynetworks) signed by `openssl
cms -sign` gets `smime=pass body.smime-identifier=...` in its
Authentication-Results; content changed after signing gets smime=fail,
a From the certificate does not name smime=policy, a certificate from a
CA we do not trust smime=policy; a field forged in our name is removed.
Every wait is bounded."""

import calendar
import email
import email.policy
import glob
import os
import re
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, SmtpSink, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
from smimepki import Pki  # noqa: E402

HOST = "mx.test.example"


def message(frm="Alice <alice@example.test>", to="bob@dest.test",
            body=b"Hello, this is the secret plan.\r\n", extra=b""):
    return (f"From: {frm}\r\nTo: {to}\r\nSubject: plans\r\n"
            "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
            f"Message-ID: <{time.monotonic_ns()}@example.test>\r\n"
            ).encode() + extra + b"\r\n" + body


def openssl(*args, data=None):
    """(returncode, stdout, stderr) of an openssl command."""
    p = subprocess.run(["openssl", *args], input=data, capture_output=True,
                       timeout=60)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


class World:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-smime-gw-")
        self.pki = Pki(os.path.join(self.tmp, "pki"))
        self.alice = self.pki.person("alice@example.test")
        self.bob = self.pki.person("bob@dest.test")
        self.carol = self.pki.person("carol@dest.test", "ec")
        self.mallory = self.pki.person("mallory@example.test",
                                       other_ca=True)
        self.certs = os.path.join(self.tmp, "certs")
        os.makedirs(self.certs)
        for _, crt in (self.alice, self.bob, self.carol):
            shutil.copy(crt, self.certs)
        self.sink = SmtpSink()
        self.sink.start()

    def config(self, extra="", sign=True, key=None):
        k, c = self.alice
        return ("transports:\n"
                f"  - \"dest.test smtp:[127.0.0.1]:{self.sink.port}\"\n"
                "smime:\n" +
                (f"  sign: [\"example.test {key or k} {c}\"]\n"
                 if sign else "") +
                f"  certs: {self.certs}\n" + extra)

    def relay(self, d, data, rcpts=("bob@dest.test",),
              sender="alice@example.test"):
        before = self.sink.count()
        with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
            s.sendmail(sender, list(rcpts), data)
        check(wait_until(lambda: self.sink.count() > before, 20),
              "the relayed message reached the next hop")
        return self.sink.messages[-1][2]

    def cleanup(self):
        self.sink.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def content_type(data):
    msg = email.message_from_bytes(data, policy=email.policy.default)
    ct = msg["Content-Type"]
    return msg, msg.get_content_type(), dict(ct.params) if ct else {}


def decrypt(data, person):
    key, crt = person
    rc, out, err = openssl("cms", "-decrypt", "-inkey", key, "-recip", crt,
                           data=data)
    check(rc == 0, f"openssl cms -decrypt with {crt}: {err}")
    return out


def verify(world, data):
    """openssl cms -verify against the test CA: the signed content."""
    rc, out, err = openssl("cms", "-verify", "-CAfile", world.pki.ca,
                           "-purpose", "smimesign", data=data)
    check(rc == 0 and "Verification successful" in err,
          f"openssl cms -verify: {err}")
    return out


def test_sign_and_encrypt():
    w = World()
    try:
        extra = "  encrypt: if-possible\n"
        with Daemon(extra=w.config(extra)) as d:
            got = w.relay(d, message(to="bob@dest.test, carol@dest.test"),
                          ("bob@dest.test", "carol@dest.test"))
            msg, ctype, params = content_type(got)
            check(ctype == "application/pkcs7-mime",
                  f"encrypted: {ctype}")
            check(params.get("smime-type") == "authEnveloped-data",
                  f"AES-GCM AuthEnvelopedData: {params}")
            check(msg["From"] == "Alice <alice@example.test>" and
                  msg["Subject"] == "plans",
                  "the outer header stays readable")
            check(b"secret plan" not in got, "no plaintext on the wire")
            # Each recipient, RSA and EC, and the sender can read it.
            for who in (w.bob, w.carol, w.alice):
                inner = decrypt(got, who)
                _, ictype, iparams = content_type(inner)
                check(ictype == "multipart/signed" and
                      iparams.get("protocol") ==
                      "application/pkcs7-signature" and
                      iparams.get("micalg") == "sha-256",
                      f"signed inside: {ictype} {iparams}")
                text = verify(w, inner)
                check(b"secret plan" in text, "the signed text")
            m = d.metrics()
            check(metric_value(m, "postseal_smime_signed_total") == 1,
                  "signed metric")
            check(metric_value(m, "postseal_smime_encrypted_total") == 1,
                  "encrypted metric")
            check(metric_value(
                m, "postseal_smime_encrypted_recipients_total") == 3,
                "encrypted to bob, carol and alice")
            rc, out, _ = openssl("x509", "-in", w.alice[1], "-noout",
                                 "-enddate")
            end = calendar.timegm(time.strptime(
                out.decode().strip().split("=", 1)[1],
                "%b %d %H:%M:%S %Y %Z"))
            got = metric_value(m, "postseal_smime_cert_expiry_timestamp_"
                                  'seconds{who="example.test"}')
            check(got == end, f"the signer's notAfter: {got} want {end}")
    finally:
        w.cleanup()


def test_if_possible_and_required():
    w = World()
    try:
        extra = ("  encrypt: if-possible\n"
                 "  encrypt_policies: [\"legal.example.test required\"]\n")
        with Daemon(extra=w.config(extra)) as d:
            # dave has no certificate: signed only (multipart/signed).
            got = w.relay(d, message(to="bob@dest.test, dave@dest.test"),
                          ("bob@dest.test", "dave@dest.test"))
            _, ctype, _ = content_type(got)
            check(ctype == "multipart/signed", f"signed only: {ctype}")
            check(b"secret plan" in verify(w, got), "signature verifies")
            check(metric_value(d.metrics(),
                               "postseal_smime_not_encrypted_total") == 1,
                  "counted as not encrypted")
            # required: refused at the end of DATA, nothing relayed.
            before = w.sink.count()
            with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
                s.ehlo("client.example")
                s.mail("lawyer@legal.example.test")
                s.rcpt("bob@dest.test")
                s.rcpt("dave@dest.test")
                code, text = s.data(message(frm="lawyer@legal.example.test"))
            text = text.decode()
            check(code == 550 and "5.7.1" in text and
                  "dave@dest.test" in text and "bob@" not in text,
                  f"550 5.7.1 naming dave only: {code} {text}")
            time.sleep(0.5)
            check(w.sink.count() == before, "nothing relayed")
            check(metric_value(d.metrics(),
                               "postseal_smime_refused_total") == 1,
                  "counted as refused")
            check("smime_refused" in d.read_log(), "logged")
            # The envelope sender's policy counts too: editing From does
            # not opt out of "required".
            with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
                s.ehlo("client.example")
                s.mail("lawyer@legal.example.test")
                s.rcpt("dave@dest.test")
                code, text = s.data(message(to="dave@dest.test"))
            check(code == 550, f"required by the envelope sender: {code}")
            # A mynetworks client whose envelope sender is in another
            # domain does not get Alice's personal signature.
            got = w.relay(d, message(to="dave@dest.test"),
                          ("dave@dest.test",), sender="app@other.test")
            _, ctype, _ = content_type(got)
            check(ctype == "text/plain", f"left unsigned: {ctype}")
            check(metric_value(d.metrics(),
                               "postseal_smime_sign_refused_total") == 2,
                  "counted as sign refused (this one and lawyer's above)")
    finally:
        w.cleanup()


def test_opaque_cbc_and_untouched():
    w = World()
    try:
        extra = ("  encrypt: if-possible\n  cipher: aes-256-cbc\n"
                 "  opaque: true\n  digest: sha384\n")
        with Daemon(extra=w.config(extra)) as d:
            got = w.relay(d, message())
            _, ctype, params = content_type(got)
            check(ctype == "application/pkcs7-mime" and
                  params.get("smime-type") == "enveloped-data",
                  f"AES-CBC EnvelopedData: {ctype} {params}")
            rc, printed, err = openssl("cms", "-cmsout", "-print", "-inform",
                                 "SMIME", data=got)
            check(rc == 0 and "aes-256-cbc" in printed.decode(),
                  f"aes-256-cbc content: {err}")
            inner = decrypt(got, w.bob)
            _, ictype, iparams = content_type(inner)
            check(ictype == "application/pkcs7-mime" and
                  iparams.get("smime-type") == "signed-data",
                  f"opaque signed inside: {ictype} {iparams}")
            check(b"secret plan" in verify(w, inner), "signature verifies")
            # A message the client signed keeps its signature (not signed
            # again) and is still encrypted as the policy asks.
            signed = signed_by(w.alice, "alice@example.test",
                               "bob@dest.test")
            got = w.relay(d, signed)
            _, ctype, params = content_type(got)
            check(params.get("smime-type") == "enveloped-data",
                  f"the client's signed mail encrypted: {ctype} {params}")
            inner = decrypt(got, w.bob)
            check(re.sub(rb"\r?\n", b"\n", inner).endswith(
                re.sub(rb"\r?\n", b"\n", signed.split(b"\r\n\r\n", 1)[1])),
                "its own signed body inside, as it was")
            check(b"secret plan" in verify(w, inner), "its signature verifies")
            check(metric_value(d.metrics(),
                               "postseal_smime_signed_total") == 1,
                  "only the first message was signed by the gateway")
            # A message the client encrypted itself is left as it is.
            rc, enc, err = openssl("cms", "-encrypt", "-aes-256-gcm", "-from",
                                   "alice@example.test", "-to",
                                   "bob@dest.test", "-subject", "plans",
                                   w.bob[1], data=ENTITY)
            check(rc == 0, f"openssl cms -encrypt: {err}")
            enc = re.sub(rb"\r?\n", b"\r\n", enc)
            got = w.relay(d, enc)
            check(got.endswith(enc.split(b"\r\n\r\n", 1)[1]),
                  "the client's encrypted body passes untouched")
            check(metric_value(d.metrics(),
                               "postseal_smime_untouched_total") == 1,
                  "the client's encrypted mail counted as untouched")
    finally:
        w.cleanup()


def test_bad_configuration_stops_start():
    w = World()
    try:
        cases = [
            (w.config(key=w.bob[0]), ("smime.sign", "example.test")),
            ("smime:\n  encrypt: required\n", ("smime.certs",)),
            (f"smime:\n  certs: {w.tmp}/nowhere\n", ("smime.certs",)),
        ]
        for extra, want in cases:
            d = Daemon(extra=extra)
            try:
                d.start(wait=False)
                rc = d.proc.wait(timeout=20)
                log = d.read_log()
                check(rc != 0, f"postseald refused to start: {extra!r}")
                check(all(x in log for x in want),
                      f"the error names {want}: {log[-400:]}")
            finally:
                d.cleanup()
    finally:
        w.cleanup()


# ---- inbound verification ---------------------------------------------


def inbound_daemon(w, checks=True):
    extra = ("local_domains:\n  - local.test\n"
             f"smime:\n  trust: {w.pki.ca}\n")
    if not checks:
        extra += "inbound_checks: []\n"
    return Daemon(mynetworks=["192.0.2.0/24"], extra=extra)


_seen = set()


def deliver_in(d, data):
    got = deliver_raw(d, data)
    msg = email.message_from_bytes(got, policy=email.policy.compat32)
    ar = msg.get_all("Authentication-Results") or []
    check(len(ar) == 1, f"one Authentication-Results field: {ar}")
    return re.sub(r"\s+", " ", ar[0])


def deliver_raw(d, data):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        s.sendmail("alice@example.test", ["user@local.test"], data)
    pattern = os.path.join(d.tmp, "mail", "local.test", "user", "new", "*")
    fresh = []

    def arrived():
        fresh[:] = [f for f in glob.glob(pattern) if f not in _seen]
        return len(fresh) > 0
    check(wait_until(arrived, 20), "delivered to the Maildir")
    _seen.add(fresh[0])
    with open(fresh[0], "rb") as f:
        return f.read()


ENTITY = (b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
          b"Hello, this is the secret plan.\r\n")


def signed_by(person, frm, to="user@local.test", entity=ENTITY):
    """A message as an S/MIME client sends it: the entity signed
    (multipart/signed), From, To and Subject outside."""
    rc, out, err = openssl("cms", "-sign", "-signer", person[1], "-inkey",
                           person[0], "-from", frm, "-to", to, "-subject",
                           "plans", data=entity)
    check(rc == 0, f"openssl cms -sign: {err}")
    return re.sub(rb"\r?\n", b"\r\n", out)  # as it travels over SMTP


def test_inbound_verification():
    w = World()
    try:
        for checks in (True, False):
            with inbound_daemon(w, checks) as d:
                ar = deliver_in(d, signed_by(w.alice, "alice@example.test"))
                check(ar.startswith(HOST) and "smime=pass" in ar and
                      "body.smime-identifier=alice@example.test" in ar,
                      f"pass: {ar}")
                check(("dkim=none" in ar) == checks,
                      f"one field with the other checks ({checks}): {ar}")
                # Changed after signing.
                good = signed_by(w.alice, "alice@example.test")
                bad = good.replace(b"secret plan", b"public plan")
                check(bad != good, "tampered")
                ar = deliver_in(d, bad)
                check("smime=fail" in ar, f"fail: {ar}")
                # From not in the certificate.
                ar = deliver_in(d, signed_by(w.alice, "bob@example.test"))
                check("smime=policy" in ar, f"From mismatch: {ar}")
                # A CA we do not trust.
                ar = deliver_in(d, signed_by(w.mallory,
                                             "mallory@example.test"))
                check("smime=policy" in ar and "smime=pass" not in ar,
                      f"untrusted: {ar}")
                # A verdict forged in our name is removed.
                forged = (f"Authentication-Results: {HOST}; smime=pass\r\n"
                          ).encode() + signed_by(w.mallory,
                                                 "mallory@example.test")
                ar = deliver_in(d, forged)
                check("smime=policy" in ar, f"forged removed: {ar}")
                # No From at all: no certificate can match it.
                rc, nofrom, err = openssl(
                    "cms", "-sign", "-signer", w.alice[1], "-inkey",
                    w.alice[0], "-to", "user@local.test", data=ENTITY)
                check(rc == 0, f"openssl cms -sign: {err}")
                ar = deliver_in(d, re.sub(rb"\r?\n", b"\r\n", nofrom))
                check("smime=policy" in ar, f"no From: {ar}")
                m = d.metrics()
                check(metric_value(m, 'postseal_smime_verify_total'
                                   '{result="pass"}') == 1,
                      "pass counted")
                check(metric_value(m, 'postseal_smime_verify_total'
                                   '{result="bad_digest"}') == 1,
                      "bad digest counted")
                if not checks:
                    # Unsigned mail: a field forged in our name still goes.
                    forged = (f"Authentication-Results: {HOST}; dkim=pass"
                              "\r\n").encode() + message(to="user@local.test")
                    got = deliver_raw(d, forged)
                    check(b"Authentication-Results" not in got,
                          "the forged field removed")
    finally:
        w.cleanup()


if __name__ == "__main__":
    run_tests([test_sign_and_encrypt, test_if_possible_and_required,
               test_opaque_cbc_and_untouched,
               test_bad_configuration_stops_start,
               test_inbound_verification])
