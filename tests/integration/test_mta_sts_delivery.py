"""MTA-STS (RFC 8461) in delivery: the recipient domain publishes a policy
(nsd serves _mta-sts TXT, the MX and mta-sts.<domain>; a Python HTTPS
server on loopback serves /.well-known/mta-sts.txt), and postseald honours
it: enforce means TLS with a certificate verified for an MX host the
policy names, else the mail waits (never sent in clear, never bounced for
the policy alone); testing delivers and logs what enforce would refuse. A
REQUIRETLS message may use an MX host authenticated by an enforce policy.
Everything on 127.0.0.1; every wait bounded."""

import os
import re
import smtplib
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SKIP, Daemon, SmtpSink, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
import dnsserver  # noqa: E402
from stsserver import PolicyServer  # noqa: E402
from tlsutil import Pki, have_tools  # noqa: E402

SOA = ("$TTL 300\n"
       "@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
       "@ IN NS ns\n"
       "ns IN A 127.0.0.1\n")

# One zone per case, each with its own policy id and policy text.
DOMAINS = {
    "enforce.test": "enforce",   # policy names mx.<domain>
    "testing.test": "testing",
    "nomatch.test": "enforce",   # policy names only other.<domain>
}


def zone(domain, policy_id):
    return SOA + ("@ IN MX 10 mx\nmx IN A 127.0.0.1\n"
                  f"_mta-sts IN TXT \"v=STSv1; id={policy_id}\"\n"
                  "mta-sts IN A 127.0.0.1\n")


def policy_text(domain, mode):
    mx = f"other.{domain}" if domain.startswith("nomatch") else f"mx.{domain}"
    return (f"version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\n"
            "max_age: 86400\r\n")


class World:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-sts-")
        self.pki = Pki(os.path.join(self.tmp, "pki"))
        names = [f"mta-sts.{d}" for d in DOMAINS]
        self.web = PolicyServer(
            self.pki, *self.pki.leaf("web", names),
            lambda d: policy_text(d, DOMAINS[d]) if d in DOMAINS else None)
        self.mx_good = self.pki.leaf("mx", [f"mx.{d}" for d in DOMAINS])
        self.mx_wrong = self.pki.leaf("wrong", ["impostor.example"])
        zones = {d: zone(d, 1) for d in DOMAINS}
        self.ns = dnsserver.Nsd(zones).start()

    def config(self, sink_port, extra=""):
        return ("dns:\n  servers:\n"
                f"    - 127.0.0.1:{self.ns.port}\n"
                "  timeout_ms: 500\n  tries: 2\n"
                "transports:\n" +
                "".join(f"  - \"{d} smtp:{d}:{sink_port}\"\n"
                        for d in DOMAINS) +
                f"tls:\n  ca_file: {self.pki.ca_cert}\n"
                f"  mta_sts_port: {self.web.port}\n" + extra +
                "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
                "  connect_timeout: 5\n")

    def stop(self):
        self.web.stop()
        self.ns.stop()
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)


WORLD = None


def world():
    global WORLD
    if WORLD is None:
        WORLD = World()
    return WORLD


def send(d, rcpt, subject, options=()):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
        s.sendmail("s@example.org", [rcpt],
                   f"Subject: {subject}\r\n\r\nbody\r\n".encode(),
                   mail_options=list(options))


def test_enforce_verified():
    w = world()
    sink = SmtpSink(tls=w.pki.server_context(*w.mx_good)).start()
    try:
        with Daemon(w.config(sink.port)) as d:
            send(d, "u@enforce.test", "sts ok")
            ok = wait_until(lambda: sink.count() == 1, 20)
            if not ok:
                d.dump_log()
            check(ok, "delivered under an enforce policy")
            check(sink.tls[0][0] in ("TLSv1.2", "TLSv1.3"), "over TLS")
            log = d.read_log()
            check(re.search(r"event=mta_sts .*domain=enforce\.test "
                            r"result=policy mode=enforce", log),
                  "the policy was found and logged")
            check("policy=mta-sts" in log and "verified=yes" in log,
                  "the connection ran under the policy, verified")
            check(("mta-sts.enforce.test", "/.well-known/mta-sts.txt")
                  in w.web.hits, f"fetched over HTTPS: {w.web.hits}")
    finally:
        sink.stop()


def test_enforce_refuses_bad_hops():
    """A wrong certificate, a hop without STARTTLS (a stripping
    attacker), an MX the policy does not name: deferred, nothing sent."""
    w = world()
    wrong = SmtpSink(tls=w.pki.server_context(*w.mx_wrong)).start()
    plain = SmtpSink().start()
    try:
        for sink, rcpt, what in ((wrong, "u@enforce.test", "wrong cert"),
                                 (plain, "u@enforce.test", "no starttls"),
                                 (plain, "u@nomatch.test", "mx mismatch")):
            with Daemon(w.config(sink.port)) as d:
                send(d, rcpt, what)
                ok = wait_until(lambda: "event=deferred" in d.read_log(), 20)
                if not ok:
                    d.dump_log()
                check(ok, f"{what}: deferred")
                check(sink.count() == 0, f"{what}: nothing sent")
                check("event=bounced" not in d.read_log(),
                      f"{what}: never bounced for the policy alone")
                if what == "mx mismatch":
                    check("no MX host of nomatch.test matches its policy"
                          in d.read_log(), "the mismatch is named")
                m = d.metrics()
                total = sum(metric_value(
                    m, f'postseal_tls_policy_failures_total{{type="{t}"}}')
                    for t in ("starttls_not_offered", "verify"))
                check(total >= 1, f"{what}: policy failure counted")
    finally:
        wrong.stop()
        plain.stop()


def test_testing_mode_delivers():
    w = world()
    wrong = SmtpSink(tls=w.pki.server_context(*w.mx_wrong)).start()
    try:
        with Daemon(w.config(wrong.port)) as d:
            send(d, "u@testing.test", "sts testing")
            ok = wait_until(lambda: wrong.count() == 1, 20)
            if not ok:
                d.dump_log()
            check(ok, "testing mode delivers despite the certificate")
            check(wait_until(lambda: "event=mta_sts_testing_failure"
                             in d.read_log(), 5),
                  "and logs what enforce would have refused")
    finally:
        wrong.stop()


def test_requiretls_over_sts():
    """RFC 8689 §5: an MX host found without DNSSEC counts as authenticated
    when an MTA-STS enforce policy names it."""
    w = world()
    cert, key = w.mx_good
    sink = SmtpSink(tls=w.pki.server_context(cert, key),
                    requiretls=True).start()
    try:
        extra = f"  cert_file: {cert}\n  key_file: {key}\n"
        with Daemon(w.config(sink.port, extra)) as d:
            ctx = ssl.create_default_context(cafile=w.pki.ca_cert)
            ctx.check_hostname = False
            with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
                s.starttls(context=ctx)
                s.sendmail("s@example.org", ["u@enforce.test"],
                           b"Subject: rtls sts\r\n\r\nbody\r\n",
                           mail_options=["REQUIRETLS"])
            ok = wait_until(lambda: sink.count() == 1, 20)
            if not ok:
                d.dump_log()
            check(ok, "REQUIRETLS delivered over an MTA-STS MX")
            check("REQUIRETLS" in sink.mail_params[0], "passed on")
    finally:
        sink.stop()


def test_dane_level_keeps_sts():
    """tls.outbound dane, a DNSSEC-secure MX with no TLSA record and an
    MTA-STS enforce policy: DANE does not apply (no usable TLSA), so the
    policy holds (RFC 8461 §2) and a hop without STARTTLS gets nothing.
    The resolver is the scripted FaultDns, which sets AD on its answers."""
    w = world()

    def txt(text):
        b = text.encode()
        return bytes([len(b)]) + b
    recs = {
        "enforce.test": [(dnsserver.TYPE_MX,
                          dnsserver.rdata_mx(10, "mx.enforce.test"))],
        "mx.enforce.test": [(dnsserver.TYPE_A, dnsserver.rdata_a("127.0.0.1"))],
        "mta-sts.enforce.test": [(dnsserver.TYPE_A,
                                  dnsserver.rdata_a("127.0.0.1"))],
        "_mta-sts.enforce.test": [(16, txt("v=STSv1; id=1"))],
    }
    ns = dnsserver.FaultDns(records=recs, ad=True).start()
    plain = SmtpSink().start()
    try:
        cfg = ("dns:\n  servers:\n" f"    - 127.0.0.1:{ns.port}\n"
               "  timeout_ms: 500\n  tries: 2\n"
               "transports:\n"
               f"  - \"enforce.test smtp:enforce.test:{plain.port}\"\n"
               f"tls:\n  ca_file: {w.pki.ca_cert}\n"
               f"  mta_sts_port: {w.web.port}\n  outbound: dane\n"
               "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
               "  connect_timeout: 5\n")
        with Daemon(cfg) as d:
            send(d, "u@enforce.test", "dane and sts")
            ok = wait_until(lambda: "event=deferred" in d.read_log(), 20)
            if not ok:
                d.dump_log()
            check(ok, "deferred: the enforce policy still holds")
            check(plain.count() == 0, f"nothing in clear: {plain.tls}")
            check("tlsa=none" in d.read_log(), "DANE found no TLSA record")
    finally:
        plain.stop()
        ns.stop()


if __name__ == "__main__":
    if not have_tools() or not dnsserver.have_nsd():
        sys.exit(SKIP)
    try:
        rc = run_tests([
            test_enforce_verified,
            test_enforce_refuses_bad_hops,
            test_testing_mode_delivers,
            test_requiretls_over_sts,
            test_dane_level_keeps_sts,
        ])
    finally:
        if WORLD is not None:
            WORLD.stop()
    sys.exit(rc)
