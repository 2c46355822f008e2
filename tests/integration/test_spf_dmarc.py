"""SPF and DMARC on inbound mail, end to end: nsd on loopback serves the
senders' SPF, DKIM and DMARC records; postseald takes mail from
127.0.0.1 as an outside client (not in mynetworks) for a local domain.

Checked: the Authentication-Results field (spf, dkim, dmarc with the
policy and disposition, header.from); DMARC p=reject answered 550 5.7.1
at the end of DATA and nothing stored; p=quarantine accepted but held in
the queue (not delivered), listed by `postseal quarantine list` with
its reason, shown and released; sp= for a subdomain; an aligned DKIM pass
rescuing an SPF fail; no DMARC record; two From fields (permerror); a
local override; dmarc.enforce: false; a mailbox's SPF lookup that times
out (temperror in bounded time); metrics. Every wait bounded."""

import base64
import email
import json
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
from harness import (POSTSEAL, Daemon, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
import dnsserver  # noqa: E402

import dkim  # noqa: E402  python3-dkim (Debian)
from cryptography.hazmat.primitives import serialization  # noqa: E402

HOST = "mx.test.example"


def zone(records):
    body = ("@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
            "@ IN NS ns\nns IN A 127.0.0.1\n")
    for owner, text in records:
        parts = [text[i:i + 250] for i in range(0, len(text), 250)]
        body += f"{owner} IN TXT " + " ".join(f'"{p}"' for p in parts) + "\n"
    return body


class World:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-spf-dmarc-")
        key = os.path.join(self.tmp, "dkim.key")
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                        "rsa_keygen_bits:2048", "-out", key], check=True,
                       capture_output=True)
        with open(key, "rb") as f:
            self.pem = f.read()
        k = serialization.load_pem_private_key(self.pem, None)
        spki = k.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        dkim_rec = "v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode()
        us = "v=spf1 ip4:127.0.0.1 -all"
        other = "v=spf1 ip4:192.0.2.1 -all"
        zones = {
            "pass.test": [("@", us), ("s._domainkey", dkim_rec),
                          ("_dmarc", "v=DMARC1; p=reject")],
            "spoof.test": [("@", other), ("_dmarc", "v=DMARC1; p=reject")],
            "override.test": [("@", other),
                              ("_dmarc", "v=DMARC1; p=reject")],
            "quar.test": [("@", other),
                          ("_dmarc", "v=DMARC1; p=quarantine; sp=none"),
                          ("sub", other)],
            "dkimonly.test": [("@", other), ("s._domainkey", dkim_rec),
                              ("_dmarc", "v=DMARC1; p=reject")],
            "nodmarc.test": [("@", us)],
        }
        self.ns = dnsserver.Nsd({d: zone(r) for d, r in zones.items()}
                                ).start()

    def daemon(self, extra="", dns_port=None):
        return Daemon(
            mynetworks=["192.0.2.0/24"],
            extra=("local_domains:\n  - local.test\n"
                   "dns:\n  servers:\n"
                   f"    - 127.0.0.1:{dns_port or self.ns.port}\n"
                   "  timeout_ms: 300\n  tries: 1\n" + extra))

    def cleanup(self):
        self.ns.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


def message(frm, extra=b""):
    return (f"From: {frm}\r\nTo: user@local.test\r\nSubject: test\r\n"
            "Date: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
            f"Message-ID: <{time.monotonic_ns()}@x.test>\r\n").encode() + \
        extra + b"\r\nHello.\r\n"


def send(d, sender, data):
    """(code, text) of the end of DATA."""
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        s.ehlo("client.example")
        code, _ = s.mail(sender)
        check(code == 250, f"MAIL {code}")
        code, _ = s.rcpt("user@local.test")
        check(code == 250, f"RCPT {code}")
        code, text = s.data(data)
        return code, text.decode()


_seen = {}


def next_delivered(d, timeout=20):
    pattern = os.path.join(d.tmp, "mail", "local.test", "user", "new", "*")
    seen = _seen.setdefault(id(d), set())
    fresh = []

    def arrived():
        fresh[:] = [f for f in glob.glob(pattern) if f not in seen]
        return len(fresh) > 0
    check(wait_until(arrived, timeout), "a message delivered")
    seen.add(fresh[0])
    with open(fresh[0], "rb") as f:
        return f.read()


def authres(data):
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    ar = msg.get_all("Authentication-Results") or []
    check(len(ar) == 1, f"one Authentication-Results field: {ar}")
    return re.sub(r"\s+", " ", ar[0])


def deliver(d, sender, data):
    code, text = send(d, sender, data)
    check(code == 250, f"accepted: {code} {text}")
    return authres(next_delivered(d))


def test_policies():
    w = World()
    try:
        with w.daemon() as d:
            ar = deliver(d, "a@pass.test", message("A <a@pass.test>"))
            check(ar.startswith(f"{HOST};"), f"authserv-id: {ar}")
            check("spf=pass" in ar and "smtp.mailfrom=pass.test" in ar,
                  f"SPF pass: {ar}")
            check("dmarc=pass (p=reject dis=none) header.from=pass.test"
                  in ar, f"DMARC pass: {ar}")

            data = message("D <d@dkimonly.test>")
            signed = dkim.sign(data, b"s", b"dkimonly.test", w.pem) + data
            ar = deliver(d, "d@dkimonly.test", signed)
            check("spf=fail" in ar and "dkim=pass" in ar and
                  "dmarc=pass" in ar,
                  f"an aligned DKIM pass makes DMARC pass: {ar}")

            ar = deliver(d, "n@nodmarc.test", message("N <n@nodmarc.test>"))
            check("spf=pass" in ar and "dmarc=none" in ar,
                  f"no DMARC record: {ar}")

            code, text = send(d, "x@spoof.test", message("X <x@spoof.test>"))
            check(code == 550 and "5.7.1" in text and "spoof.test" in text,
                  f"p=reject: 550 5.7.1: {code} {text}")

            code, text = send(d, "q@quar.test", message("Q <q@quar.test>"))
            check(code == 250, f"p=quarantine accepted: {code} {text}")
            qid = re.search(r"queued as ([0-9A-F]+)", text).group(1)
            check(wait_until(lambda: any(
                m.get("queue_id") == qid and
                m.get("held") for m in d.queue()), 10),
                f"quarantined message held: {d.queue()}")

            # The quarantine: listed with its reason, shown, released.
            out = subprocess.run(
                [POSTSEAL, "quarantine", "list", "--json", "-d", d.spool],
                check=True, capture_output=True, text=True).stdout
            items = [json.loads(x) for x in out.splitlines() if x.strip()]
            check(len(items) == 1 and items[0]["queue_id"] == qid and
                  "dis=quarantine" in items[0]["reason"] and
                  "header.from=quar.test" in items[0]["reason"],
                  f"quarantine list: {items}")
            shown = subprocess.run(
                [POSTSEAL, "quarantine", "show", qid, "-d", d.spool],
                check=True, capture_output=True).stdout
            check(b"From: Q <q@quar.test>" in shown, "quarantine show")
            bad = subprocess.run(
                [POSTSEAL, "quarantine", "release", "0" * 16, "-d", d.spool],
                capture_output=True, text=True)
            check(bad.returncode != 0 and "not in quarantine" in bad.stderr,
                  f"an id not in quarantine is refused: {bad.stderr}")
            subprocess.run([POSTSEAL, "quarantine", "release", qid, "-d",
                            d.spool], check=True, capture_output=True)
            ar = authres(next_delivered(d))
            check("dis=quarantine" in ar and "header.from=quar.test" in ar,
                  f"released: delivered with its verdict: {ar}")
            out = subprocess.run(
                [POSTSEAL, "quarantine", "list", "-d", d.spool],
                check=True, capture_output=True, text=True).stdout
            check("Quarantine is empty" in out, f"empty after release: {out}")

            ar = deliver(d, "s@sub.quar.test",
                         message("S <s@sub.quar.test>"))
            check("dmarc=fail (p=none dis=none) header.from=sub.quar.test"
                  in ar, f"sp=none for a subdomain: {ar}")

            ar = deliver(d, "a@pass.test", message(
                "A <a@pass.test>", extra=b"From: B <b@spoof.test>\r\n"))
            check("dmarc=permerror" in ar, f"two From fields: {ar}")

            m = d.metrics()
            check(metric_value(m, 'postseal_dmarc_actions_total'
                                  '{action="reject"}') == 1, "reject counted")
            check(metric_value(m, 'postseal_dmarc_actions_total'
                                  '{action="quarantine"}') == 1,
                  "quarantine counted")
            check(metric_value(m, 'postseal_spf_results_total'
                                  '{result="pass"}') >= 3, "SPF counted")
            check(not d.sanitizer_reports(), "no sanitizer reports")
    finally:
        w.cleanup()


def test_override_and_enforce_off():
    w = World()
    try:
        with w.daemon(extra="dmarc:\n  overrides: [\"override.test none\"]\n"
                      ) as d:
            ar = deliver(d, "o@override.test",
                         message("O <o@override.test>"))
            check("dmarc=fail (p=reject dis=none)" in ar,
                  f"local override: delivered: {ar}")
            code, _ = send(d, "x@spoof.test", message("X <x@spoof.test>"))
            check(code == 550, "other domains still rejected")
        with w.daemon(extra="dmarc:\n  enforce: false\n") as d:
            ar = deliver(d, "x@spoof.test", message("X <x@spoof.test>"))
            check("dmarc=fail (p=reject dis=reject)" in ar,
                  f"enforce off: recorded, delivered: {ar}")
    finally:
        w.cleanup()


def test_checks_per_listener():
    """inbound_checks: the relay port by default; the submission port
    (here without AUTH, so the client is not trusted) only when listed."""
    w = World()
    sub = "submission:\n  require_auth: false\n  require_tls: false\n"
    try:
        for listed in (False, True):
            extra = sub + ("inbound_checks: [smtp, submission]\n"
                           if listed else "")
            with w.daemon(extra=extra) as d:
                with smtplib.SMTP("127.0.0.1", d.submission_port,
                                  timeout=30) as s:
                    s.sendmail("a@pass.test", ["user@local.test"],
                               message("A <a@pass.test>"))
                got = next_delivered(d)
                has = b"Authentication-Results:" in got
                check(has == listed,
                      f"submission port checked: {has}, listed: {listed}")
    finally:
        w.cleanup()


def test_spf_timeout_is_temperror():
    w = World()
    fault = dnsserver.FaultDns(faults={"slow.test": "timeout"})
    fault.start()
    try:
        with w.daemon(dns_port=fault.port,
                      extra="spf:\n  timeout: 3\n") as d:
            start = time.monotonic()
            ar = deliver(d, "s@slow.test", message("S <s@slow.test>"))
            check("spf=temperror" in ar, f"SPF temperror: {ar}")
            check(time.monotonic() - start < 15, "bounded")
    finally:
        fault.stop()
        w.cleanup()


if __name__ == "__main__":
    sys.exit(run_tests([
        test_policies,
        test_override_and_enforce_off,
        test_checks_per_listener,
        test_spf_timeout_is_temperror,
    ]))
