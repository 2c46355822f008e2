"""Routing and final delivery: MX routing through a real DNS server on
loopback (Debian's nsd serving test zones, c-ares pointed at it), DNS
faults from a scripted server (SERVFAIL, silence), LMTP into Dovecot, and
local Maildir delivery; with the bounces and success reports each outcome
asks for.

Every next hop is on 127.0.0.1: MX hosts resolve to 127.0.0.1 (a sink) or
127.0.0.2 (nothing listens: connection refused). The MX port is given by a
transports entry ("mx.test smtp:mx.test:PORT": MX lookup of mx.test, that
port). Skips (77) when nsd or Dovecot is missing."""

import os
import re
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SKIP, Daemon, SmtpSink, check, free_port,  # noqa: E402
                     metric_value, run_tests, wait_until)
import dnsserver  # noqa: E402
from dovecot import Dovecot  # noqa: E402

SOA = ("$TTL 300\n"
       "@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
       "@ IN NS ns\n"
       "ns IN A 127.0.0.1\n")

ZONES = {
    # Preference order: mx1 (10) refuses connections, mx2 (20) is the sink.
    "mx.test": SOA + ("@ IN MX 20 mx2\n@ IN MX 10 mx1\n"
                      "mx1 IN A 127.0.0.2\nmx2 IN A 127.0.0.1\n"),
    # No MX: the domain's own address is the implicit MX.
    "nomx.test": SOA + "@ IN A 127.0.0.1\n",
    # The MX host is a CNAME (RFC 5321 §5.1 says it should not be; it is
    # followed, as Postfix does).
    "cname.test": SOA + ("@ IN MX 10 alias\nalias IN CNAME real\n"
                         "real IN A 127.0.0.1\n"),
    # RFC 7505 null MX: the domain accepts no mail.
    "nullmx.test": SOA + "@ IN MX 0 .\n",
    # An MX host with no address record at all.
    "nohost.test": SOA + "@ IN MX 10 ghost\n",
}

DOMAINS = ["mx.test", "nomx.test", "cname.test", "nullmx.test",
           "nohost.test", "nosuch.mx.test"]


def routed_config(dns_port, sink_port, extra_transports=()):
    lines = [f"{dom} smtp:{dom}:{sink_port}" for dom in DOMAINS]
    # Reports to the senders (bounce.test) go straight to the sink.
    lines.append(f"bounce.test smtp:[127.0.0.1]:{sink_port}")
    lines.extend(extra_transports)
    return ("dns:\n  servers:\n"
            f"    - 127.0.0.1:{dns_port}\n"
            "  timeout_ms: 500\n  tries: 2\n"
            "transports:\n" + "".join(f'  - "{x}"\n' for x in lines) +
            "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
            "  connect_timeout: 5\n")


def send(d, sender, rcpts, subject, rcpt_options=()):
    body = (f"From: {sender}\r\nTo: {', '.join(rcpts)}\r\n"
            f"Subject: {subject}\r\nMessage-ID: <{subject}@test>\r\n\r\n"
            f"body of {subject}\r\n")
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        s.ehlo("client.test")
        refused = s.sendmail(sender, rcpts, body,
                             rcpt_options=list(rcpt_options))
    check(not refused, f"{subject}: every recipient accepted")


def by_subject(sink, subject):
    with sink.lock:
        return [m for m in sink.messages
                if f"Subject: {subject}".encode() in m[2]]


def reports_for(sink, subject):
    """DSNs (from <>) that quote the original by its Subject."""
    with sink.lock:
        return [m for m in sink.messages
                if m[0] == "" and subject.encode() in m[2]]


def need(cond, what):
    if not cond:
        print(f"SKIP: {what}")
        sys.exit(SKIP)


def test_mx_routing():
    need(dnsserver.have_nsd(), "nsd is not installed (setup.sh)")
    sink = SmtpSink().start()
    try:
        with dnsserver.Nsd(ZONES) as ns, \
                Daemon(extra=routed_config(ns.port, sink.port)) as d:
            send(d, "s@bounce.test", ["a@mx.test"], "t-mx")
            send(d, "s@bounce.test", ["b@nomx.test"], "t-nomx")
            send(d, "s@bounce.test", ["c@cname.test"], "t-cname")
            ok = wait_until(lambda: all(by_subject(sink, s) for s in
                                        ("t-mx", "t-nomx", "t-cname")), 20)
            log = d.read_log()
            if not ok:
                d.dump_log()
            check(ok, "MX, implicit MX and CNAME'd MX delivered")
            check(re.search(r"event=delivered .*to=a@mx\.test .*"
                            r"relay=mx2\.mx\.test\[127\.0\.0\.1\]", log),
                  "a@mx.test went to mx2 after mx1 refused")
            check(re.search(r"relay=mx1\.mx\.test\[127\.0\.0\.2\]", log) or
                  "connect to mx1.mx.test[127.0.0.2]" in log,
                  "mx1 (preference 10) was tried first")
            check(re.search(r"event=delivered .*to=b@nomx\.test .*"
                            r"relay=nomx\.test\[127\.0\.0\.1\]", log),
                  "implicit MX: the domain's own A record")
            check(wait_until(lambda: len(d.queue()) == 0, 10),
                  "queue empty once delivered")
            check(not reports_for(sink, "t-mx"), "no report for a delivery")
    finally:
        sink.stop()


def test_permanent_dns_answers_bounce():
    need(dnsserver.have_nsd(), "nsd is not installed (setup.sh)")
    sink = SmtpSink().start()
    try:
        with dnsserver.Nsd(ZONES) as ns, \
                Daemon(extra=routed_config(ns.port, sink.port)) as d:
            send(d, "s@bounce.test", ["x@nullmx.test"], "t-null")
            send(d, "s@bounce.test", ["y@nosuch.mx.test"], "t-nx")
            ok = wait_until(lambda: reports_for(sink, "t-null") and
                            reports_for(sink, "t-nx"), 20)
            if not ok:
                d.dump_log()
            check(ok, "a DSN for the null MX and for NXDOMAIN")
            null_dsn = reports_for(sink, "t-null")[0]
            check(null_dsn[1] == ["s@bounce.test"], "DSN to the sender")
            check(b"Status: 5.1.10" in null_dsn[2] and
                  b"Action: failed" in null_dsn[2],
                  "null MX: Status 5.1.10 (RFC 7505), action failed")
            nx = reports_for(sink, "t-nx")[0][2]
            check(b"Status: 5.4.4" in nx, "NXDOMAIN: Status 5.4.4")
            text = d.metrics()
            check(metric_value(text, 'postseal_delivery_outcomes_total'
                               '{result="bounced",reason="address"}') == 1,
                  "null MX counted as an address reason (5.1.10)")
            check(metric_value(text, 'postseal_delivery_outcomes_total'
                               '{result="bounced",reason="network"}') == 1,
                  "NXDOMAIN counted as a network/routing reason (5.4.4)")
            check(wait_until(lambda: len(d.queue()) == 0, 10),
                  "both finished: nothing left queued")
    finally:
        sink.stop()


def test_mx_without_address_bounces():
    need(dnsserver.have_nsd(), "nsd is not installed (setup.sh)")
    sink = SmtpSink().start()
    try:
        with dnsserver.Nsd(ZONES) as ns, \
                Daemon(extra=routed_config(ns.port, sink.port)) as d:
            send(d, "s@bounce.test", ["z@nohost.test"], "t-ghost")
            ok = wait_until(lambda: reports_for(sink, "t-ghost"), 20)
            if not ok:
                d.dump_log()
            check(ok, "an MX host without any address: bounced with a DSN")
    finally:
        sink.stop()


def test_dns_faults_defer_without_a_tight_loop():
    faults = {"servfail.test": "servfail", "silent.test": "timeout",
              "garbage.test": "garbage"}
    sink = SmtpSink().start()
    try:
        with dnsserver.FaultDns(faults) as fd:
            extra = routed_config(fd.port, sink.port, [
                f"{dom} smtp:{dom}:{sink.port}" for dom in faults])
            with Daemon(extra=extra) as d:
                send(d, "s@bounce.test", ["a@servfail.test"], "t-sf")
                send(d, "s@bounce.test", ["b@silent.test"], "t-silent")
                send(d, "s@bounce.test", ["c@garbage.test"], "t-garbage")
                ok = wait_until(lambda: len(re.findall(
                    r"event=deferred .*dsn=4\.4\.3", d.read_log())) >= 3, 15)
                if not ok:
                    d.dump_log()
                check(ok, "SERVFAIL, silence and a malformed answer: "
                          "deferred with 4.4.3")
                time.sleep(4)
                n = fd.count("servfail.test")
                check(1 <= n <= 12,
                      f"no tight retry loop: {n} queries for servfail.test "
                      f"in ~6 s")
                check(len(d.queue()) == 3, "all three stay queued")
                check(not reports_for(sink, "t-sf"),
                      "no bounce for a temporary DNS failure")
    finally:
        sink.stop()


def test_lmtp_into_dovecot():
    need(Dovecot.available(), "Dovecot is not installed (setup.sh)")
    sink = SmtpSink().start()
    try:
        with Dovecot(users=["bob@lmtp.test", "carol@lmtp.test"]) as dv:
            extra = ("transports:\n"
                     f'  - "lmtp.test lmtp:127.0.0.1:{dv.port}"\n'
                     f'  - "bounce.test smtp:[127.0.0.1]:{sink.port}"\n'
                     "delivery:\n  retry_initial: 1\n  retry_max: 2\n")
            with Daemon(extra=extra) as d:
                send(d, "s@bounce.test",
                     ["bob@lmtp.test", "nobody@lmtp.test", "carol@lmtp.test"],
                     "t-lmtp", rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
                ok = wait_until(lambda: dv.messages("bob", "lmtp.test") and
                                dv.messages("carol", "lmtp.test") and
                                len(reports_for(sink, "t-lmtp")) >= 1, 20)
                if not ok:
                    d.dump_log()
                check(ok, "bob and carol got it through LMTP")
                msg = dv.messages("bob", "lmtp.test")[0]
                check(b"Subject: t-lmtp" in msg and b"Received: " in msg,
                      "the stored message has our Received: header")
                log = d.read_log()
                check(re.search(r"event=bounced .*to=nobody@lmtp\.test .*"
                                r"dsn=5\.1\.1", log),
                      "the unknown user bounced with Dovecot's 5.1.1")
                check(wait_until(lambda: len(d.queue()) == 0, 10),
                      "nothing left queued")
                reps = b"".join(m[2] for m in reports_for(sink, "t-lmtp"))
                check(b"Action: failed" in reps and
                      b"Action: delivered" in reps,
                      "DSNs: failed for nobody, delivered (NOTIFY=SUCCESS) "
                      "for bob and carol")
    finally:
        sink.stop()


def test_local_maildir_delivery():
    sink = SmtpSink().start()
    try:
        extra = ("local_domains:\n  - ours.test\n"
                 "transports:\n"
                 f'  - "bounce.test smtp:[127.0.0.1]:{sink.port}"\n')
        with Daemon(extra=extra) as d:
            send(d, "s@bounce.test", ["alice@ours.test"], "t-local",
                 rcpt_options=["NOTIFY=SUCCESS"])
            # Valid SMTP (a quoted local part) but not a safe file name.
            send(d, "s@bounce.test", ['"../evil"@ours.test'], "t-evil")
            newdir = os.path.join(d.tmp, "mail", "ours.test", "alice", "new")
            ok = wait_until(lambda: os.path.isdir(newdir) and
                            os.listdir(newdir), 15)
            if not ok:
                d.dump_log()
            check(ok, "alice's message is in her Maildir's new/")
            name = os.listdir(newdir)[0]
            with open(os.path.join(newdir, name), "rb") as f:
                data = f.read()
            check(data.startswith(b"Return-Path: <s@bounce.test>\n"),
                  "Return-Path first, LF line ends")
            check(b"Delivered-To: alice@ours.test\n" in data, "Delivered-To")
            check(b"\r\n" not in data, "no CRLF in the Maildir file")
            check(re.search(r",S=%d" % len(data), name), "S= is the size")
            check(not os.listdir(os.path.join(
                d.tmp, "mail", "ours.test", "alice", "tmp")),
                "nothing left in tmp/")
            ok = wait_until(lambda: reports_for(sink, "t-local") and
                            reports_for(sink, "t-evil"), 15)
            check(ok, "a delivered report for alice, a bounce for ../evil")
            rep = reports_for(sink, "t-local")[0][2]
            check(b"Action: delivered" in rep and b"Status: 2.0.0" in rep,
                  "NOTIFY=SUCCESS: Action delivered, Status 2.0.0")
            evil = reports_for(sink, "t-evil")[0][2]
            check(b"Action: failed" in evil, "a hostile local part bounces")
            check(not os.path.exists(os.path.join(d.tmp, "mail", "evil")) and
                  not os.path.exists(os.path.join(d.tmp, "evil")),
                  "nothing written outside the template")
            text = d.metrics()
            check(metric_value(text, "postseal_queue_messages") == 0 or
                  wait_until(lambda: len(d.queue()) == 0, 5),
                  "queue empty")
    finally:
        sink.stop()


def test_delay_and_relayed_reports():
    sink = SmtpSink().start()
    closed = free_port()
    try:
        extra = ("transports:\n"
                 f'  - "late.test smtp:[127.0.0.1]:{closed}"\n'
                 f'  - "relay.test smtp:[127.0.0.1]:{sink.port}"\n'
                 f'  - "bounce.test smtp:[127.0.0.1]:{sink.port}"\n'
                 "delivery:\n  retry_initial: 1\n  retry_max: 1\n"
                 "  delay_warning: 1\n  connect_timeout: 2\n")
        with Daemon(extra=extra) as d:
            send(d, "s@bounce.test", ["x@late.test"], "t-late")
            send(d, "s@bounce.test", ["n@late.test"], "t-never",
                 rcpt_options=["NOTIFY=NEVER"])
            send(d, "s@bounce.test", ["y@relay.test"], "t-relayed",
                 rcpt_options=["NOTIFY=SUCCESS"])
            ok = wait_until(lambda: reports_for(sink, "t-late") and
                            reports_for(sink, "t-relayed"), 20)
            if not ok:
                d.dump_log()
            check(ok, "a delay report and a relayed report")
            late = reports_for(sink, "t-late")[0][2]
            check(b"Action: delayed" in late and b"Status: 4.4.1" in late,
                  "delayed: Action delayed, Status 4.4.1 (connect failed)")
            check(b"Will-Retry-Until:" in late, "Will-Retry-Until given")
            rel = reports_for(sink, "t-relayed")[0][2]
            check(b"Action: relayed" in rel,
                  "NOTIFY=SUCCESS to a next hop without DSN: relayed")
            time.sleep(3)
            check(len(reports_for(sink, "t-late")) == 1,
                  "one delay report per recipient, not one per retry")
            check(not reports_for(sink, "t-never"), "NOTIFY=NEVER: none")
            text = d.metrics()
            by_state = [metric_value(
                text, f'postseal_queue_messages_by_state{{state="{st}"}}')
                for st in ("held", "active", "deferred")]
            check(by_state[0] == 0 and sum(by_state) == 2,
                  f"queue by state counts the two late ones: {by_state}")
            check((metric_value(text, "postseal_dns_queries_total") or 0) >= 0
                  and 'postseal_dns_lookups_total{source="cache"}' in text,
                  "DNS metrics exposed")
            check(len(d.queue()) == 2, "the two late ones stay queued")
    finally:
        sink.stop()


if __name__ == "__main__":
    run_tests([test_mx_routing, test_permanent_dns_answers_bounce,
               test_mx_without_address_bounces,
               test_dns_faults_defer_without_a_tight_loop,
               test_lmtp_into_dovecot, test_local_maildir_delivery,
               test_delay_and_relayed_reports])
