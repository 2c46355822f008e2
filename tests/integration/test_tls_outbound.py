"""Outbound STARTTLS: opportunistic by default, required by policy
(encrypt, verify), session resumption towards the next hop, and the
downgrades a path attacker tries (STARTTLS stripped or refused, a wrong
certificate): mail is deferred, never sent in clear where TLS is required.

The next hop is the harness's scripted sink on 127.0.0.1, speaking
STARTTLS through Python's ssl with a certificate from a test CA made with
openssl. Routes with names go through nsd on loopback (mx.tls.test ->
127.0.0.1) so the certificate's name can be checked."""

import os
import re
import smtplib
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SKIP, Daemon, SmtpSink, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
import dnsserver  # noqa: E402
from tlsutil import Pki, have_tools  # noqa: E402

SOA = ("$TTL 300\n"
       "@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
       "@ IN NS ns\n"
       "ns IN A 127.0.0.1\n")
ZONES = {"tls.test": SOA + "@ IN MX 10 mx\nmx IN A 127.0.0.1\n"}

PKI = None


def pki():
    global PKI
    if PKI is None:
        PKI = Pki(tempfile.mkdtemp(prefix="postseal-tlsout-"))
        PKI.good = PKI.leaf("mx", ["mx.tls.test"])
        PKI.wrong = PKI.leaf("other", ["other.tls.test"])
    return PKI


def send(d, rcpt, subject, n=1):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
        for i in range(n):
            s.sendmail("s@example.org", [rcpt],
                       f"Subject: {subject} {i}\r\n\r\nbody\r\n".encode())


def relay_config(port, level, extra=""):
    return (f"relayhost: \"[127.0.0.1]:{port}\"\n"
            f"tls:\n  outbound: {level}\n" + extra +
            "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
            "  connect_timeout: 5\n  messages_per_connection: 1\n")


def test_opportunistic_tls_and_resumption():
    p = pki()
    sink = SmtpSink(tls=p.server_context(*p.good)).start()
    try:
        with Daemon(relay_config(sink.port, "may")) as d:
            send(d, "u@far.example", "may", n=4)
            ok = wait_until(lambda: sink.count() == 4, 20)
            if not ok:
                d.dump_log()
            check(ok, "four messages delivered")
            versions = [v for v, _ in sink.tls]
            check(all(v in ("TLSv1.2", "TLSv1.3") for v in versions),
                  f"every message over TLS: {sink.tls}")
            check(any(r for _, r in sink.tls),
                  f"later connections resume the session: {sink.tls}")
            log = d.read_log()
            check("event=tls " in log and "policy=may" in log,
                  "the outbound handshake is logged")
            m = d.metrics()
            full = metric_value(m, 'postseal_tls_handshakes_total{direction='
                                   '"outbound",result="full"}')
            resumed = metric_value(m, 'postseal_tls_handshakes_total{'
                                      'direction="outbound",'
                                      'result="resumed"}')
            check(full + resumed == 4 and resumed >= 1,
                  f"handshakes counted: full {full}, resumed {resumed}")
    finally:
        sink.stop()


def test_opportunistic_plaintext_fallback():
    sink = SmtpSink().start()  # offers no STARTTLS
    try:
        with Daemon(relay_config(sink.port, "may")) as d:
            send(d, "u@far.example", "plain")
            check(wait_until(lambda: sink.count() == 1, 20),
                  "delivered in plaintext when STARTTLS is not offered")
            check(sink.tls == [(None, False)], f"plaintext: {sink.tls}")
    finally:
        sink.stop()


def test_encrypt_never_in_clear():
    """encrypt: a next hop without STARTTLS (a stripping attacker) or one
    that refuses it gets nothing; the mail waits in the queue."""
    p = pki()
    stripped = SmtpSink().start()
    refusing = SmtpSink(tls=p.server_context(*p.good),
                        starttls_reply="454 4.7.0 TLS not available").start()
    try:
        for sink, what in ((stripped, "stripped"), (refusing, "refused")):
            with Daemon(relay_config(sink.port, "encrypt")) as d:
                send(d, "u@far.example", what)
                ok = wait_until(lambda: "event=deferred" in d.read_log(), 20)
                if not ok:
                    d.dump_log()
                check(ok, f"{what}: deferred")
                check(sink.count() == 0, f"{what}: nothing sent in clear")
                check(len(d.queue()) == 1, f"{what}: still queued")
                m = d.metrics()
                v = metric_value(m, 'postseal_tls_policy_failures_total{'
                                    'type="starttls_not_offered"}')
                check(v >= 1, f"{what}: policy failure counted: {v}")
    finally:
        stripped.stop()
        refusing.stop()


def routed(dns_port, sink_port, level, ca):
    return ("dns:\n  servers:\n"
            f"    - 127.0.0.1:{dns_port}\n"
            "  timeout_ms: 500\n  tries: 2\n"
            f"transports:\n  - \"tls.test smtp:tls.test:{sink_port}\"\n"
            f"tls:\n  outbound: may\n  ca_file: {ca}\n"
            f"  policies: [\"tls.test {level}\"]\n"
            "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
            "  connect_timeout: 5\n")


def test_verify_policy():
    check(dnsserver.have_nsd(), "nsd is installed (scripts/setup.sh)")
    p = pki()
    good = SmtpSink(tls=p.server_context(*p.good)).start()
    wrong = SmtpSink(tls=p.server_context(*p.wrong)).start()
    try:
        with dnsserver.Nsd(ZONES) as ns:
            with Daemon(routed(ns.port, good.port, "verify",
                               p.ca_cert)) as d:
                send(d, "u@tls.test", "verified")
                ok = wait_until(lambda: good.count() == 1, 20)
                if not ok:
                    d.dump_log()
                check(ok, "delivered to the verified next hop")
                check("verified=yes" in d.read_log(), "verification logged")
            with Daemon(routed(ns.port, wrong.port, "verify",
                               p.ca_cert)) as d:
                send(d, "u@tls.test", "wrong name")
                ok = wait_until(lambda: "event=deferred" in d.read_log(), 20)
                if not ok:
                    d.dump_log()
                check(ok, "a certificate for another name: deferred")
                check(wrong.count() == 0, "nothing sent to the impostor")
                m = d.metrics()
                check(metric_value(m, 'postseal_tls_policy_failures_total{'
                                      'type="verify"}') >= 1,
                      "verify failure counted")
            # The same impostor is fine for "encrypt" (no name check).
            with Daemon(routed(ns.port, wrong.port, "encrypt",
                               p.ca_cert)) as d:
                send(d, "u@tls.test", "encrypt only")
                check(wait_until(lambda: wrong.count() == 1, 20),
                      "encrypt does not check the name")
    finally:
        good.stop()
        wrong.stop()


def submit_requiretls(d, rcpt, subject, ca):
    """Sends one message with MAIL ... REQUIRETLS over STARTTLS."""
    import ssl
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False  # the daemon's test cert names mx.tls.test
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
        s.starttls(context=ctx)
        s.ehlo("client.test")
        check(s.has_extn("requiretls"), "REQUIRETLS offered inside TLS")
        s.sendmail("s@bounce.test", [rcpt],
                   f"Subject: {subject}\r\n\r\nsecret body\r\n".encode(),
                   mail_options=["REQUIRETLS", "RET=FULL"])


def requiretls_config(dns_port, p, good_port, plain_port, bounce_port):
    cert, key = p.good
    return ("dns:\n  servers:\n"
            f"    - 127.0.0.1:{dns_port}\n"
            "  timeout_ms: 500\n  tries: 2\n"
            "transports:\n"
            f"  - \"named.test smtp:[mx.tls.test]:{good_port}\"\n"
            f"  - \"noreq.test smtp:[mx.tls.test]:{plain_port}\"\n"
            f"  - \"tls.test smtp:tls.test:{good_port}\"\n"
            f"  - \"bounce.test smtp:[127.0.0.1]:{bounce_port}\"\n"
            f"tls:\n  cert_file: {cert}\n  key_file: {key}\n"
            f"  ca_file: {p.ca_cert}\n"
            "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
            "  connect_timeout: 5\n")


def test_requiretls():
    """RFC 8689: a REQUIRETLS message goes only over verified TLS to a next
    hop that offers REQUIRETLS, and only where the next-hop name is
    authenticated (named by the operator here; an MX answer without
    DNSSEC is not); else it bounces 5.7.30, never downgraded."""
    check(dnsserver.have_nsd(), "nsd is installed (scripts/setup.sh)")
    p = pki()
    good = SmtpSink(tls=p.server_context(*p.good), requiretls=True).start()
    noreq = SmtpSink(tls=p.server_context(*p.good)).start()
    bounces = SmtpSink().start()
    try:
        with dnsserver.Nsd(ZONES) as ns, \
                Daemon(requiretls_config(ns.port, p, good.port, noreq.port,
                                         bounces.port)) as d:
            submit_requiretls(d, "u@named.test", "rtls ok", p.ca_cert)
            ok = wait_until(lambda: good.count() == 1, 20)
            if not ok:
                d.dump_log()
            check(ok, "delivered to the named, verified next hop")
            check("REQUIRETLS" in good.mail_params[0],
                  f"REQUIRETLS passed on: {good.mail_params}")
            submit_requiretls(d, "u@noreq.test", "rtls noreq", p.ca_cert)
            submit_requiretls(d, "u@tls.test", "rtls mx", p.ca_cert)
            ok = wait_until(lambda: d.read_log().count("5.7.30") >= 2, 20)
            if not ok:
                d.dump_log()
            check(ok, "both refused with 5.7.30")
            log = d.read_log()
            check(re.search(r"event=bounced .*to=u@noreq\.test .*"
                            r"does not offer REQUIRETLS", log),
                  "a hop without REQUIRETLS: bounced")
            check(re.search(r"event=bounced .*to=u@tls\.test .*"
                            r"MX host name is not authenticated", log),
                  "an MX found without DNSSEC: bounced")
            check(noreq.count() == 0, "nothing to a hop without REQUIRETLS")
            check(good.count() == 1, "nothing over an unauthenticated MX")
            check(wait_until(lambda: bounces.count() == 2, 20),
                  "two failure reports to the sender")
            for _, _, data in bounces.messages:
                check(b"text/rfc822-headers" in data and
                      b"secret body" not in data,
                      "RFC 8689 §5: the report carries headers only "
                      f"despite RET=FULL: {data[-600:]!r}")
            # Outside TLS the parameter is refused: TLS was stripped.
            with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
                s.ehlo("client.test")
                check(not s.has_extn("requiretls"), "not offered in clear")
                try:
                    s.sendmail("s@example.org", ["u@named.test"], b"x\r\n",
                               mail_options=["REQUIRETLS"])
                    check(False, "REQUIRETLS in clear must be refused")
                except smtplib.SMTPSenderRefused as e:
                    check(e.smtp_code == 530, f"530 in clear: {e}")
    finally:
        good.stop()
        noreq.stop()
        bounces.stop()


if __name__ == "__main__":
    import atexit
    import shutil
    atexit.register(lambda: PKI and shutil.rmtree(PKI.dir, ignore_errors=True))
    if not have_tools():
        sys.exit(SKIP)
    sys.exit(run_tests([
        test_opportunistic_tls_and_resumption,
        test_opportunistic_plaintext_fallback,
        test_encrypt_never_in_clear,
        test_verify_policy,
        test_requiretls,
    ]))
