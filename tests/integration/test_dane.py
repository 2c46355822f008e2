"""DANE (RFC 7672) on outbound delivery, against real peers on loopback.

The world: a zone dane.test signed with ldns-keygen/ldns-signzone and an
unsigned zone insecure.test, both served by nsd; unbound validates them
(a trust anchor for dane.test only, stub zones to nsd, no other server
asked) and is postseald's only resolver. Each next hop is the harness's
scripted sink on 127.0.0.1, with or without STARTTLS, its certificate
from a test CA made with openssl. Every domain X routes through a
transport "X smtp:X:PORT" (an MX lookup, the sink's port), so the TLSA
records sit at _PORT._tcp.mx.X.

Cases, at tls.outbound: dane:
  good      secure MX and TLSA 3 1 1 of the sink's key: delivered over
            TLS, verified by DANE, resumed sessions verified again;
  mismatch  secure TLSA that does not match: deferred, nothing sent, the
            dane failure counted;
  stripped  secure TLSA, the next hop offers no STARTTLS: deferred, never
            in clear;
  fallback  two MX hosts on the same sink: the first one's TLSA does not
            match, so the second (whose TLSA does) gets the mail;
  ta        DANE-TA 2 0 1 of the test CA, leaf named for the MX host:
            delivered; tawrong: the same anchor, a leaf for another name:
            deferred;
  unusable  secure TLSA records, all PKIX-EE (unusable for SMTP): TLS
            required, the certificate not checked (as encrypt);
  insecure  unsigned zone (its TLSA ignored): may, plaintext delivery;
  notlsa    signed zone without TLSA: may, plaintext delivery;
  bogus     TLSA record altered after signing (unbound: SERVFAIL): the
            lookup failed, so the host is never even connected to.
And with a scripted server that claims AD but never answers the TLSA
query: the connect timeout ends the wait (deferred, no connection), and
so does a stop (the daemon exits cleanly, the message stays queued)."""

import hashlib
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SKIP, Daemon, SmtpSink, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
import dnsserver  # noqa: E402
from tlsutil import OPENSSL, Pki, have_tools  # noqa: E402

SOA = ("@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
       "@ IN NS ns\n"
       "ns IN A 127.0.0.1\n")

ENV = None  # the shared world, made once by world()


def der_of(cert_pem):
    """DER of the first certificate in a PEM file."""
    return subprocess.run([OPENSSL, "x509", "-in", cert_pem, "-outform",
                           "DER"], check=True, stdout=subprocess.PIPE,
                          timeout=30).stdout


def spki_of(cert_pem):
    """DER SubjectPublicKeyInfo of the first certificate in a PEM file."""
    pem = subprocess.run([OPENSSL, "x509", "-in", cert_pem, "-noout",
                          "-pubkey"], check=True, stdout=subprocess.PIPE,
                         timeout=30).stdout
    return subprocess.run([OPENSSL, "pkey", "-pubin", "-outform", "DER"],
                          input=pem, check=True, stdout=subprocess.PIPE,
                          timeout=30).stdout


def tlsa_3_1_1(cert_pem):
    return "3 1 1 " + hashlib.sha256(spki_of(cert_pem)).hexdigest()


def tlsa_2_0_1(cert_pem):
    return "2 0 1 " + hashlib.sha256(der_of(cert_pem)).hexdigest()


class World:
    """PKI, sinks, zones, nsd and unbound for every case."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-dane-")
        self.pki = Pki(os.path.join(self.tmp, "pki"))
        leaf = {name: self.pki.leaf(name.replace(".", "-"), [name])
                for name in ("mx.good.dane.test", "mx.mismatch.dane.test",
                             "mx.ta.dane.test", "elsewhere.example",
                             "mx.bogus.dane.test", "mx2.fallback.dane.test")}
        ctx = {n: self.pki.server_context(*p) for n, p in leaf.items()}
        self.sinks = {
            "good.dane.test": SmtpSink(tls=ctx["mx.good.dane.test"]),
            "mismatch.dane.test": SmtpSink(tls=ctx["mx.mismatch.dane.test"]),
            "stripped.dane.test": SmtpSink(),
            "ta.dane.test": SmtpSink(tls=ctx["mx.ta.dane.test"]),
            "tawrong.dane.test": SmtpSink(tls=ctx["elsewhere.example"]),
            "notlsa.dane.test": SmtpSink(),
            "bogus.dane.test": SmtpSink(tls=ctx["mx.bogus.dane.test"]),
            "fallback.dane.test": SmtpSink(
                tls=ctx["mx2.fallback.dane.test"]),
            "unusable.dane.test": SmtpSink(tls=ctx["elsewhere.example"]),
            "insecure.test": SmtpSink(),
        }
        for sink in self.sinks.values():
            sink.start()  # now: their ports are in the zones
        good_key = tlsa_3_1_1(leaf["mx.good.dane.test"][0])
        ca = tlsa_2_0_1(self.pki.ca_cert)
        self.bogus_key = tlsa_3_1_1(leaf["mx.bogus.dane.test"][0])
        tlsa = {
            "good": good_key,
            "mismatch": good_key,  # not the mismatch sink's key
            "stripped": good_key,
            "ta": ca,
            "tawrong": ca,
            "bogus": self.bogus_key,
            "unusable": "1" + good_key[1:],  # PKIX-EE(1): §3.1.3
        }
        fb = self.sinks["fallback.dane.test"].port
        body = SOA + (
            "fallback IN MX 10 mx1.fallback\n"
            "fallback IN MX 20 mx2.fallback\n"
            "mx1.fallback IN A 127.0.0.1\n"
            "mx2.fallback IN A 127.0.0.1\n"
            f"_{fb}._tcp.mx1.fallback IN TLSA "
            f"{tlsa_3_1_1(self.pki.ca_cert)}\n"  # not the sink's key
            f"_{fb}._tcp.mx2.fallback IN TLSA "
            f"{tlsa_3_1_1(leaf['mx2.fallback.dane.test'][0])}\n")
        for domain, sink in self.sinks.items():
            if not domain.endswith(".dane.test") or domain.startswith("fall"):
                continue
            label = domain[:-len(".dane.test")]
            body += (f"{label} IN MX 10 mx.{label}\n"
                     f"mx.{label} IN A 127.0.0.1\n")
            if label in tlsa:
                body += f"_{sink.port}._tcp.mx.{label} IN TLSA {tlsa[label]}\n"
        signed, self.ds = dnsserver.sign_zone(
            "dane.test", body, os.path.join(self.tmp, "keys"))
        # Alter the bogus host's TLSA data after signing: its RRSIG no
        # longer verifies, and a validating resolver says SERVFAIL.
        digest = self.bogus_key.split()[-1]
        check(signed.count(digest) == 1, "the bogus TLSA record is signed")
        signed = signed.replace(digest, "00" * 32)
        insecure_port = self.sinks["insecure.test"].port
        unsigned = (SOA + "@ IN MX 10 mx\nmx IN A 127.0.0.1\n"
                    f"_{insecure_port}._tcp.mx IN TLSA 3 1 1 {'00' * 32}\n")
        self.zones = {"dane.test": signed, "insecure.test": unsigned}
        self.nsd = None
        self.unbound = None

    def start(self):
        self.nsd = dnsserver.Nsd(self.zones).start()
        stubs = {"dane.test": self.nsd.port, "insecure.test": self.nsd.port,
                 ".": self.nsd.port}
        self.unbound = dnsserver.Unbound(stubs, [self.ds]).start()
        return self

    def stop(self):
        if self.unbound is not None:
            self.unbound.stop()
        if self.nsd is not None:
            self.nsd.stop()
        for sink in self.sinks.values():
            sink.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def config(self, extra_delivery=""):
        transports = "".join(
            f'  - "{dom} smtp:{dom}:{sink.port}"\n'
            for dom, sink in self.sinks.items())
        return ("dns:\n  servers:\n"
                f"    - 127.0.0.1:{self.unbound.port}\n"
                "  timeout_ms: 1000\n  tries: 2\n"
                "transports:\n" + transports +
                f"tls:\n  outbound: dane\n  ca_file: {self.pki.ca_cert}\n"
                "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
                "  connect_timeout: 5\n" + extra_delivery)


def world():
    global ENV
    if ENV is None:
        ENV = World().start()
    return ENV


def send(d, rcpt, subject, n=1):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
        for i in range(n):
            s.sendmail("s@example.org", [rcpt],
                       f"Subject: {subject} {i}\r\n\r\nbody\r\n".encode())


def lines(log, event, needle):
    """The log lines of one event that mention needle."""
    return [ln for ln in log.splitlines()
            if f"event={event} " in ln and needle in ln]


def dane_failures(d):
    return metric_value(d.metrics(), 'postseal_tls_policy_failures_total{'
                                     'type="dane"}')


def expect_delivered(d, domain, n=1):
    sink = world().sinks[domain]
    ok = wait_until(lambda: sink.count() == n, 20)
    if not ok:
        d.dump_log()
    check(ok, f"{domain}: {n} delivered (got {sink.count()})")
    return sink


def expect_deferred(d, domain):
    """Waits for the first deferral to domain; returns its log line."""
    rcpt = f"to=u@{domain} "
    ok = wait_until(lambda: lines(d.read_log(), "deferred", rcpt), 20)
    if not ok:
        d.dump_log()
    check(ok, f"{domain}: deferred")
    check(world().sinks[domain].count() == 0, f"{domain}: nothing sent")
    check(len(d.queue()) == 1, f"{domain}: still queued")
    return lines(d.read_log(), "deferred", rcpt)[0]


def test_good_tlsa_delivers_verified():
    w = world()
    with Daemon(w.config("  messages_per_connection: 1\n")) as d:
        # One first, so its session is cached before the others connect.
        send(d, "u@good.dane.test", "dane first")
        expect_delivered(d, "good.dane.test", 1)
        send(d, "u@good.dane.test", "dane again", n=2)
        sink = expect_delivered(d, "good.dane.test", 3)
        check(all(v in ("TLSv1.2", "TLSv1.3") for v, _ in sink.tls),
              f"every message over TLS: {sink.tls}")
        log = d.read_log()
        decided = lines(log, "dane", "host=mx.good.dane.test")
        check(len(decided) >= 3 and all("tlsa=1" in ln for ln in decided),
              f"each connection's TLSA decision logged: {decided}")
        tls = lines(log, "tls", "mx.good.dane.test")
        check(len(tls) == 3 and
              all("verified=dane" in ln and "policy=dane" in ln
                  for ln in tls),
              f"every handshake verified by DANE: {tls}")
        check(any("resumed=1" in ln for ln in tls),
              f"a resumed session, verified again: {tls}")
        check(dane_failures(d) == 0, "no dane failure counted")


def test_mismatch_defers():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@mismatch.dane.test", "mismatch")
        line = expect_deferred(d, "mismatch.dane.test")
        check("4.7.5" in line and "DANE verification failed" in line,
              f"the reason is given: {line}")
        check(w.sinks["mismatch.dane.test"].sessions >= 1,
              "the next hop was reached (and refused after the handshake)")
        check(dane_failures(d) >= 1, "dane failure counted")


def test_fallback_to_next_mx():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@fallback.dane.test", "fallback")
        expect_delivered(d, "fallback.dane.test")
        # The log line follows the sink's 250: wait for it (slow under ASan).
        wait_until(lambda: lines(d.read_log(), "delivered",
                                 "to=u@fallback.dane.test "), 10)
        log = d.read_log()
        tls = lines(log, "tls", "dest=smtp:fallback.dane.test:")
        check(len(tls) == 2 and "relay=mx1.fallback" in tls[0] and
              "verified=no" in tls[0] and "relay=mx2.fallback" in tls[1] and
              "verified=dane" in tls[1],
              f"mx1 refused after its handshake, mx2 verified: {tls}")
        done = lines(log, "delivered", "to=u@fallback.dane.test ")
        check(done and "relay=mx2.fallback.dane.test[" in done[0],
              f"delivered through the second MX host: {done}")
        check(dane_failures(d) == 1, "the first host's failure counted")


def test_stripped_starttls_defers():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@stripped.dane.test", "stripped")
        line = expect_deferred(d, "stripped.dane.test")
        check("4.7.4" in line and "not offered" in line,
              f"TLS was required: {line}")
        check(w.sinks["stripped.dane.test"].sessions >= 1,
              "the next hop was reached, and got nothing in clear")
        check(metric_value(d.metrics(), 'postseal_tls_policy_failures_total{'
                                        'type="starttls_not_offered"}') >= 1,
              "the missing STARTTLS counted")


def test_dane_ta():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@ta.dane.test", "ta")
        expect_delivered(d, "ta.dane.test")
        tls = lines(d.read_log(), "tls", "mx.ta.dane.test")
        check(tls and "verified=dane" in tls[0],
              f"DANE-TA verified the chain and the name: {tls}")
        send(d, "u@tawrong.dane.test", "ta, wrong name")
        line = expect_deferred(d, "tawrong.dane.test")
        check("name mismatch" in line,
              f"DANE-TA still checks the name (RFC 7672 §3.2.2): {line}")
        check(dane_failures(d) >= 1, "dane failure counted")


def test_unusable_tlsa_is_encrypt():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@unusable.dane.test", "unusable")
        sink = expect_delivered(d, "unusable.dane.test")
        check(sink.tls and sink.tls[0][0] in ("TLSv1.2", "TLSv1.3"),
              f"over TLS: {sink.tls}")
        log = d.read_log()
        decided = lines(log, "dane", "host=mx.unusable.dane.test")
        check(decided and "tlsa=unusable" in decided[0],
              f"decision logged: {decided}")
        tls = lines(log, "tls", "relay=mx.unusable.dane.test")
        check(tls and "policy=encrypt" in tls[0] and "verified=no" in tls[0],
              f"TLS required, certificate not checked: {tls}")


def test_insecure_zone_is_may():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@insecure.test", "insecure")
        sink = expect_delivered(d, "insecure.test")
        check(sink.tls == [(None, False)],
              f"plaintext, as may (its TLSA not used): {sink.tls}")
        decided = lines(d.read_log(), "dane", "dest=smtp:insecure.test:")
        check(decided and "tlsa=insecure" in decided[0],
              f"decision logged: {decided}")


def test_secure_zone_without_tlsa_is_may():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@notlsa.dane.test", "notlsa")
        sink = expect_delivered(d, "notlsa.dane.test")
        check(sink.tls == [(None, False)], f"plaintext, as may: {sink.tls}")
        decided = lines(d.read_log(), "dane", "host=mx.notlsa.dane.test")
        check(decided and "tlsa=none" in decided[0],
              f"secure denial of TLSA logged: {decided}")


def test_bogus_tlsa_never_connects():
    w = world()
    with Daemon(w.config()) as d:
        send(d, "u@bogus.dane.test", "bogus")
        line = expect_deferred(d, "bogus.dane.test")
        check("TLSA lookup" in line and "failed" in line,
              f"the failed lookup is the reason: {line}")
        decided = lines(d.read_log(), "dane", "host=mx.bogus.dane.test")
        check(decided and "tlsa=failed" in decided[0],
              f"decision logged: {decided}")
        check(w.sinks["bogus.dane.test"].sessions == 0,
              "no connection to a host whose TLSA lookup failed")
        check(dane_failures(d) >= 1, "dane failure counted")


def silent_tlsa_world(sink):
    """A FaultDns that answers slow.test's MX and address with AD, and
    never its TLSA query."""
    tlsa = f"_{sink.port}._tcp.mx.slow.test"
    records = {
        "slow.test": [(dnsserver.TYPE_MX,
                       dnsserver.rdata_mx(10, "mx.slow.test"))],
        "mx.slow.test": [(dnsserver.TYPE_A, dnsserver.rdata_a("127.0.0.1"))],
    }
    return tlsa, dnsserver.FaultDns({tlsa: "timeout"}, records=records,
                                    ad=True)


def slow_config(dns_port, sink_port, connect_timeout):
    return ("dns:\n  servers:\n"
            f"    - 127.0.0.1:{dns_port}\n"
            "  timeout_ms: 3000\n  tries: 2\n"
            f'transports:\n  - "slow.test smtp:slow.test:{sink_port}"\n'
            "tls:\n  outbound: dane\n"
            "delivery:\n  retry_initial: 60\n"
            f"  connect_timeout: {connect_timeout}\n")


def test_tlsa_wait_bounded_by_connect_timeout():
    sink = SmtpSink().start()
    tlsa, fault = silent_tlsa_world(sink)
    try:
        with fault, Daemon(slow_config(fault.port, sink.port, 1)) as d:
            send(d, "u@slow.test", "slow")
            ok = wait_until(lambda: lines(d.read_log(), "deferred",
                                          "to=u@slow.test "), 20)
            if not ok:
                d.dump_log()
            check(ok, "deferred once the connect timeout ran out")
            line = lines(d.read_log(), "deferred", "to=u@slow.test ")[0]
            check("4.7.5" in line and "timed out" in line,
                  f"the TLSA wait is the reason: {line}")
            check(fault.count(tlsa) >= 1, "the TLSA query was asked")
            check(sink.sessions == 0, "no connection without a TLSA answer")
            check(dane_failures(d) >= 1, "dane failure counted")
    finally:
        sink.stop()


def test_stop_during_tlsa_lookup():
    sink = SmtpSink().start()
    tlsa, fault = silent_tlsa_world(sink)
    try:
        with fault, Daemon(slow_config(fault.port, sink.port, 30)) as d:
            send(d, "u@slow.test", "stop while waiting")
            check(wait_until(lambda: fault.count(tlsa) >= 1, 20),
                  "the TLSA query is in flight")
            rc = d.stop()
            check(rc == 0, f"clean exit while a TLSA lookup waited: {rc}")
            check("cancelled by shutdown" in d.read_log(),
                  "the waiting connection ended by the stop")
            check(len(d.queue()) == 1, "the message stays queued")
            check(sink.sessions == 0, "nothing connected")
    finally:
        sink.stop()


if __name__ == "__main__":
    if not have_tools() or not dnsserver.have_dnssec_tools():
        sys.exit(SKIP)
    try:
        rc = run_tests([
            test_good_tlsa_delivers_verified,
            test_mismatch_defers,
            test_fallback_to_next_mx,
            test_stripped_starttls_defers,
            test_dane_ta,
            test_unusable_tlsa_is_encrypt,
            test_insecure_zone_is_may,
            test_secure_zone_without_tlsa_is_may,
            test_bogus_tlsa_never_connects,
            test_tlsa_wait_bounded_by_connect_timeout,
            test_stop_during_tlsa_lookup,
        ])
    finally:
        if ENV is not None:
            ENV.stop()
    sys.exit(rc)
