"""SMTP TLS Reporting (RFC 8460) end to end: nsd serves two domains with
an MTA-STS enforce policy (a Python HTTPS server on loopback serves the
policy files) and a _smtp._tls TXT record pointing at
mailto:reports@rua.test. One next hop presents a certificate for its MX
name (success), the other one for another name (failure: deferred, and
counted as certificate-host-mismatch). A domain without a TLSRPT record
gets no report. With a short tls.report_interval the daemon sends the
reports to a sink for rua.test; the test gunzips the attachment and
checks the JSON (§4.4) and the message (§5.3). Everything on 127.0.0.1;
every wait bounded."""

import email
import email.policy
import gzip
import json
import os
import re
import shutil
import smtplib
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SKIP, Daemon, SmtpSink, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
import dnsserver  # noqa: E402
from stsserver import PolicyServer  # noqa: E402
from tlsutil import Pki, have_tools  # noqa: E402

HOSTNAME = "mx.test.example"  # harness.Daemon's hostname
RUA = "reports@rua.test"
STS_DOMAINS = ("stsgood.test", "stsbad.test")
INTERVAL = 3  # tls.report_interval, seconds

SOA = ("$TTL 300\n"
       "@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
       "@ IN NS ns\n"
       "ns IN A 127.0.0.1\n"
       "@ IN MX 10 mx\n"
       "mx IN A 127.0.0.1\n")


def zones():
    z = {}
    for d in STS_DOMAINS:
        z[d] = SOA + ("_mta-sts IN TXT \"v=STSv1; id=1\"\n"
                      "mta-sts IN A 127.0.0.1\n"
                      f"_smtp._tls IN TXT \"v=TLSRPTv1; rua=mailto:{RUA}\"\n")
    z["rua.test"] = SOA
    z["plain.test"] = SOA  # no TLSRPT record: its data is dropped
    return z


class World:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-tlsrpt-")
        self.pki = Pki(os.path.join(self.tmp, "pki"))
        self.web = PolicyServer(
            self.pki, *self.pki.leaf("web",
                                     [f"mta-sts.{d}" for d in STS_DOMAINS]),
            lambda d: (f"version: STSv1\r\nmode: enforce\r\n"
                       f"mx: mx.{d}\r\nmax_age: 86400\r\n")
            if d in STS_DOMAINS else None)
        self.mx_good = self.pki.leaf("good", ["mx.stsgood.test"])
        self.mx_wrong = self.pki.leaf("wrong", ["impostor.example"])
        self.ns = dnsserver.Nsd(zones()).start()
        self.good = SmtpSink(tls=self.pki.server_context(*self.mx_good))
        self.bad = SmtpSink(tls=self.pki.server_context(*self.mx_wrong))
        self.plain = SmtpSink(tls=self.pki.server_context(*self.mx_good))
        self.rua = SmtpSink()
        for s in (self.good, self.bad, self.plain, self.rua):
            s.start()

    def config(self, reports=True):
        routes = {"stsgood.test": self.good.port, "stsbad.test": self.bad.port,
                  "plain.test": self.plain.port, "rua.test": self.rua.port}
        return ("dns:\n  servers:\n"
                f"    - 127.0.0.1:{self.ns.port}\n"
                "  timeout_ms: 500\n  tries: 2\n"
                "transports:\n" +
                "".join(f"  - \"{d} smtp:{d}:{p}\"\n"
                        for d, p in routes.items()) +
                f"tls:\n  ca_file: {self.pki.ca_cert}\n"
                f"  mta_sts_port: {self.web.port}\n"
                f"  reports: {'true' if reports else 'false'}\n"
                f"  report_interval: {INTERVAL}\n"
                "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
                "  connect_timeout: 5\n")

    def stop(self):
        for s in (self.good, self.bad, self.plain, self.rua):
            s.stop()
        self.web.stop()
        self.ns.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


WORLD = None


def world():
    global WORLD
    if WORLD is None:
        WORLD = World()
    return WORLD


def send(d, rcpt, subject):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
        s.sendmail("s@example.org", [rcpt],
                   f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def reports(sink, start=0):
    """The TLS reports the sink got (from index start): a list of
    (envelope sender, rcpts, message, attachment filename, report)."""
    out = []
    with sink.lock:
        msgs = list(sink.messages[start:])
    for sender, rcpts, data in msgs:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        if msg.get_content_type() != "multipart/report":
            continue
        for part in msg.walk():
            if part.get_content_type() == "application/tlsrpt+gzip":
                body = gzip.decompress(part.get_payload(decode=True))
                out.append((sender, rcpts, msg, part.get_filename(),
                            json.loads(body)))
    return out


def by_domain(found, domain):
    return [r for r in found
            if r[4]["policies"][0]["policy"]["policy-domain"] == domain]


def check_report(sender, rcpts, msg, filename, rep, domain):
    """The fields every report must have (§4.4, §5.1, §5.3)."""
    check(sender == f"postmaster@{HOSTNAME}", f"envelope sender {sender}")
    check(rcpts == [RUA], f"sent to the rua mailbox: {rcpts}")
    check(msg.get_param("report-type") == "tlsrpt",
          f"multipart/report; report-type=tlsrpt: {msg['Content-Type']}")
    rid = rep["report-id"]
    subject = " ".join(msg["Subject"].split())
    check(subject == f"Report Domain: {domain} Submitter: {HOSTNAME} "
          f"Report-ID: <{rid}>", f"Subject: {subject}")
    check(msg["TLS-Report-Domain"] == domain and
          msg["TLS-Report-Submitter"] == HOSTNAME, "TLS-Report-* fields")
    check(rep["organization-name"] == HOSTNAME, "organization-name")
    check(rep["contact-info"] == f"postmaster@{HOSTNAME}", "contact-info")
    dr = rep["date-range"]
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"
    check(re.match(stamp, dr["start-datetime"]) and
          re.match(stamp, dr["end-datetime"]) and
          dr["start-datetime"] < dr["end-datetime"], f"date-range {dr}")
    m = re.fullmatch(re.escape(f"{HOSTNAME}!{domain}!") +
                     r"(\d+)!(\d+)!([0-9A-F]+)\.json\.gz", filename or "")
    check(m and int(m.group(2)) - int(m.group(1)) + 1 >= INTERVAL,
          f"attachment named per §5.1: {filename}")


def test_reports_sent():
    w = world()
    start = w.rua.count()
    with Daemon(w.config()) as d:
        send(d, "u@stsgood.test", "good")
        send(d, "u@stsbad.test", "bad")
        send(d, "u@plain.test", "plain")
        ok = wait_until(lambda: w.good.count() >= 1 and
                        w.plain.count() >= 1, 20)
        if not ok:
            d.dump_log()
        check(ok, "delivered to the good next hops")

        def have_both():
            found = reports(w.rua, start)
            bad = [r for r in by_domain(found, "stsbad.test")
                   if r[4]["policies"][0]["failure-details"]]
            return by_domain(found, "stsgood.test") and bad

        ok = wait_until(have_both, 40, step=0.5)
        if not ok:
            d.dump_log(120)
        check(ok, "reports for both domains reached rua.test")
        found = reports(w.rua, start)
        check(w.bad.count() == 0, "nothing went to the wrong certificate")

        good = by_domain(found, "stsgood.test")
        for r in good:
            check_report(*r, "stsgood.test")
        pol = good[0][4]["policies"][0]
        check(pol["policy"]["policy-type"] == "sts", f"sts: {pol}")
        check(pol["policy"]["mx-host"] == ["mx.stsgood.test"], "mx-host")
        check("mode: enforce" in pol["policy"]["policy-string"],
              f"policy-string: {pol['policy']}")
        check(sum(r[4]["policies"][0]["summary"]
                  ["total-successful-session-count"] for r in good) >= 1,
              "a successful session counted")
        check(all(r[4]["policies"][0]["summary"]
                  ["total-failure-session-count"] == 0 for r in good),
              "no failure for the good next hop")

        bad = [r for r in by_domain(found, "stsbad.test")
               if r[4]["policies"][0]["failure-details"]]
        check_report(*bad[0], "stsbad.test")
        pol = bad[0][4]["policies"][0]
        check(pol["policy"]["policy-type"] == "sts", f"sts: {pol}")
        check(pol["summary"]["total-failure-session-count"] >= 1,
              f"failures counted: {pol['summary']}")
        fd = pol["failure-details"][0]
        check(fd["result-type"] == "certificate-host-mismatch",
              f"result-type: {fd}")
        check(fd["receiving-mx-hostname"] == "mx.stsbad.test",
              f"receiving-mx-hostname: {fd}")
        check(fd["receiving-ip"] == "127.0.0.1" and
              fd["sending-mta-ip"] == "127.0.0.1", f"addresses: {fd}")
        check(fd["failed-session-count"] >= 1 and
              "mx.stsbad.test" in fd["failure-reason-code"],
              f"count and reason: {fd}")

        check(not by_domain(found, "plain.test"),
              "no report for a domain without a TLSRPT record")
        check(not by_domain(found, "rua.test"), "nor for rua.test")
        log = d.read_log()
        check("event=tlsrpt_queued" in log, "queueing logged")
        m = d.metrics()
        check(metric_value(m, 'postseal_tlsrpt_reports_total'
                           '{result="queued"}') >= 2, "reports counted")
        check(metric_value(m, 'postseal_tlsrpt_reports_total'
                           '{result="no_record"}') >= 1,
              "domains without a record counted")
        check(metric_value(m, 'postseal_tlsrpt_sessions_total'
                           '{result="failed"}') >= 1, "failed sessions")
        check(metric_value(m, 'postseal_tlsrpt_dropped_total'
                           '{what="domain"}') == 0, "nothing dropped")


def test_reports_off():
    w = world()
    start = w.rua.count()
    with Daemon(w.config(reports=False)) as d:
        before = w.good.count()
        send(d, "u@stsgood.test", "good, no reports")
        check(wait_until(lambda: w.good.count() > before, 20), "delivered")
        # Two whole periods and the hand-over grace: nothing comes.
        wait_until(lambda: w.rua.count() > start, 2 * INTERVAL + 3)
        check(w.rua.count() == start, "tls.reports false: no report")
        m = d.metrics()
        check(metric_value(m, 'postseal_tlsrpt_sessions_total'
                           '{result="successful"}') == 0, "nothing counted")


if __name__ == "__main__":
    if not have_tools() or not dnsserver.have_nsd():
        sys.exit(SKIP)
    try:
        rc = run_tests([test_reports_sent, test_reports_off])
    finally:
        if WORLD is not None:
            WORLD.stop()
    sys.exit(rc)
