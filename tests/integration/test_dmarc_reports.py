"""DMARC aggregate reports (RFC 7489 §7.1, §7.2) sent by postseald, end to
end: nsd on loopback serves the senders' SPF and DMARC records (rua
mailto: URIs) and the §7.1 authorisation records of the report
receivers; postseald takes mail from 127.0.0.1 as an outside client (not
in mynetworks) for local.test, counts each message for its policy
domain, and with a short dmarc.report_interval sends the reports to an
SmtpSink that transports route the rua domains to.

Checked: the report message (From, To, the §7.2.1.1 Subject and
attachment name, application/gzip); the gunzipped XML against the RFC's
Appendix C schema (xmllint); its counts, source_ip, dispositions,
policy_published, header_from and auth_results; a record found at the
organisational domain; a rua address in the same organisational domain
(no check), one authorised by "<domain>._report._dmarc.<rua domain>",
one not authorised (no report, counted), one whose "!size" the report
does not fit (counted); dmarc.reports: false; metrics. Everything on
127.0.0.1; every wait bounded."""

import email
import email.policy
import gzip
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, SmtpSink, check, metric_value,  # noqa: E402
                     run_tests, wait_until)
import dnsserver  # noqa: E402

HOST = "mx.test.example"  # harness.Daemon's hostname
INTERVAL = 3  # dmarc.report_interval, seconds
XSD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data",
                   "dmarc", "rfc7489-appendix-c.xsd")
US = "v=spf1 ip4:127.0.0.1 -all"
OTHER = "v=spf1 ip4:192.0.2.1 -all"
AUTH = "v=DMARC1"


def dmarc(p, rua):
    return f"v=DMARC1; p={p}; rua=mailto:{rua}"


# Sender domains: (SPF, DMARC record).
SENDERS = {
    "pass.test": (US, dmarc("none", "dmarc@rua.test")),
    "fail.test": (OTHER, dmarc("none", "dmarc@rua.test")),
    "quar.test": (OTHER, dmarc("quarantine", "dmarc@rua.test")),
    "self.test": (US, dmarc("none", "dmarc@reports.self.test")),
    "ext.test": (US, dmarc("none", "dmarc@authorized.test")),
    "noauth.test": (US, dmarc("none", "dmarc@unauth.test")),
    "size.test": (US, dmarc("none", "dmarc@rua.test!10")),
}
# Report receivers and the policy domains they accept reports for (§7.1).
RECEIVERS = {
    "rua.test": ("pass.test", "fail.test", "quar.test", "size.test"),
    "authorized.test": ("ext.test",),
    "unauth.test": (),
}


def zone(records):
    body = ("@ IN SOA ns hostmaster 1 3600 600 86400 300\n"
            "@ IN NS ns\nns IN A 127.0.0.1\n")
    for owner, text in records:
        body += f'{owner} IN TXT "{text}"\n'
    return body


def zones():
    z = {}
    for d, (spf, rec) in SENDERS.items():
        z[d] = zone([("@", spf), ("_dmarc", rec)])
    for d, allowed in RECEIVERS.items():
        z[d] = zone([(f"{p}._report._dmarc", AUTH) for p in allowed])
    return z


class World:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="postseal-dmarcrpt-")
        self.ns = dnsserver.Nsd(zones()).start()
        self.sink = SmtpSink()
        self.sink.start()

    def daemon(self, reports=True):
        routes = ("rua.test", "authorized.test", "unauth.test",
                  "reports.self.test")
        return Daemon(
            mynetworks=["192.0.2.0/24"],
            extra=("local_domains:\n  - local.test\n"
                   "dns:\n  servers:\n"
                   f"    - 127.0.0.1:{self.ns.port}\n"
                   "  timeout_ms: 500\n  tries: 2\n"
                   "transports:\n" +
                   "".join(f"  - \"{d} smtp:[127.0.0.1]:{self.sink.port}\"\n"
                           for d in routes) +
                   "dmarc:\n"
                   f"  reports: {'true' if reports else 'false'}\n"
                   f"  report_interval: {INTERVAL}\n"
                   "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
                   "  connect_timeout: 5\n"))

    def stop(self):
        self.sink.stop()
        self.ns.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


WORLD = None


def world():
    global WORLD
    if WORLD is None:
        WORLD = World()
    return WORLD


def send(d, sender, frm):
    """The end-of-DATA reply code of one message to user@local.test."""
    data = (f"From: {frm}\r\nTo: user@local.test\r\nSubject: test\r\n"
            f"Message-ID: <{time.monotonic_ns()}@x.test>\r\n\r\nHello.\r\n")
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        s.ehlo("client.example")
        check(s.mail(sender)[0] == 250, "MAIL")
        check(s.rcpt("user@local.test")[0] == 250, "RCPT")
        return s.data(data.encode())[0]


def reports(sink, start=0):
    """The DMARC reports the sink got (from index start): a list of dicts
    with sender, rcpts, msg, filename, xml (bytes), root (parsed)."""
    out = []
    with sink.lock:
        msgs = list(sink.messages[start:])
    for sender, rcpts, data in msgs:
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        for part in msg.walk():
            if part.get_content_type() == "application/gzip":
                xml = gzip.decompress(part.get_payload(decode=True))
                out.append({"sender": sender, "rcpts": rcpts, "msg": msg,
                            "filename": part.get_filename(), "xml": xml,
                            "root": ET.fromstring(xml)})
    return out


def domain_of(r):
    return r["root"].findtext("policy_published/domain")


def by_domain(found, domain):
    return [r for r in found if domain_of(r) == domain]


def rows(rs):
    """Every record element of reports rs."""
    out = []
    for r in rs:
        for rec in r["root"].findall("record"):
            out.append(rec)
    return out


def xmllint_ok(tmp, xml):
    path = os.path.join(tmp, "report.xml")
    with open(path, "wb") as f:
        f.write(xml)
    p = subprocess.run(["xmllint", "--noout", "--schema", XSD, path],
                       capture_output=True, text=True)
    return p.returncode == 0, p.stderr


def check_message(w, r, domain, rua):
    """The fields every report message must have (§7.2.1.1)."""
    msg, root = r["msg"], r["root"]
    check(r["sender"] == f"postmaster@{HOST}", f"envelope: {r['sender']}")
    check(r["rcpts"] == [rua], f"sent to the rua address: {r['rcpts']}")
    check(msg["From"] == f"postmaster@{HOST}", f"From: {msg['From']}")
    check(msg["To"] == rua, f"To: {msg['To']}")
    rid = root.findtext("report_metadata/report_id")
    subject = " ".join(msg["Subject"].split())
    check(subject == f"Report Domain: {domain} Submitter: {HOST} "
          f"Report-ID: <{rid}>", f"Subject: {subject}")
    check(msg.get_content_type() == "multipart/mixed", "multipart/mixed")
    begin = int(root.findtext("report_metadata/date_range/begin"))
    end = int(root.findtext("report_metadata/date_range/end"))
    check(end - begin + 1 >= INTERVAL and begin % INTERVAL == 0,
          f"date_range is a period: {begin} {end}")
    check(r["filename"] == f"{HOST}!{domain}!{begin}!{end}.xml.gz",
          f"attachment named per §7.2.1.1: {r['filename']}")
    check(root.findtext("report_metadata/org_name") == HOST, "org_name")
    check(root.findtext("report_metadata/email") == f"postmaster@{HOST}",
          "email")
    ok, err = xmllint_ok(w.tmp, r["xml"])
    check(ok, f"valid against the Appendix C schema: {err}")


def count_rows(recs, **want):
    """Messages in recs whose fields match want (path -> text)."""
    n = 0
    for rec in recs:
        if all(rec.findtext(p) == v for p, v in want.items()):
            n += int(rec.findtext("row/count"))
    return n


def test_reports_sent():
    w = world()
    start = w.sink.count()
    with w.daemon() as d:
        # pass.test: 2 aligned SPF passes; one with a From in a
        # subdomain (the record found at the organisational domain).
        check(send(d, "s@pass.test", "a@pass.test") == 250, "pass 1")
        check(send(d, "s@pass.test", "a@pass.test") == 250, "pass 2")
        check(send(d, "s@pass.test", "a@child.pass.test") == 250, "child")
        check(send(d, "s@fail.test", "a@fail.test") == 250, "fail p=none")
        check(send(d, "s@quar.test", "a@quar.test") == 250, "quarantined")
        check(send(d, "s@self.test", "a@self.test") == 250, "self")
        check(send(d, "s@ext.test", "a@ext.test") == 250, "ext")
        check(send(d, "s@noauth.test", "a@noauth.test") == 250, "noauth")
        check(send(d, "s@size.test", "a@size.test") == 250, "size")

        want = ("pass.test", "fail.test", "quar.test", "self.test", "ext.test")

        def counted():
            found = reports(w.sink, start)
            return all(sum(int(x) for r in by_domain(found, dom)
                           for x in [c.text for c in
                                     r["root"].iter("count")]) >=
                       (3 if dom == "pass.test" else 1) for dom in want)

        ok = wait_until(counted, 40, step=0.5)
        if not ok:
            d.dump_log(120)
        check(ok, f"reports for {want} reached the sink")
        found = reports(w.sink, start)

        for dom in ("pass.test", "fail.test", "quar.test"):
            for r in by_domain(found, dom):
                check_message(w, r, dom, "dmarc@rua.test")
        for r in by_domain(found, "self.test"):
            check_message(w, r, "self.test", "dmarc@reports.self.test")
        for r in by_domain(found, "ext.test"):
            check_message(w, r, "ext.test", "dmarc@authorized.test")

        pp = by_domain(found, "quar.test")[0]["root"].find("policy_published")
        check(pp.findtext("p") == "quarantine" and pp.findtext("pct") ==
              "100" and pp.findtext("adkim") == "r", "policy_published")

        recs = rows(by_domain(found, "pass.test"))
        check(all(rec.findtext("row/source_ip") == "127.0.0.1"
                  for rec in recs), "source_ip 127.0.0.1")
        check(count_rows(recs, **{"identifiers/header_from": "pass.test",
                                  "row/policy_evaluated/disposition": "none",
                                  "row/policy_evaluated/spf": "pass",
                                  "auth_results/spf/domain": "pass.test",
                                  "auth_results/spf/result": "pass"}) == 2,
              "two pass.test messages on one row")
        check(count_rows(recs, **{"identifiers/header_from":
                                  "child.pass.test"}) == 1,
              "the subdomain's From reported under the org domain")
        recs = rows(by_domain(found, "fail.test"))
        check(count_rows(recs, **{"row/policy_evaluated/disposition": "none",
                                  "row/policy_evaluated/spf": "fail",
                                  "row/policy_evaluated/dkim": "fail",
                                  "auth_results/spf/result": "fail"}) == 1,
              "the failing p=none message")
        recs = rows(by_domain(found, "quar.test"))
        check(count_rows(recs, **{"row/policy_evaluated/disposition":
                                  "quarantine",
                                  "identifiers/header_from":
                                  "quar.test"}) == 1,
              "the quarantined message")

        check(not by_domain(found, "noauth.test"),
              "no report to an unauthorised external address")
        check(not by_domain(found, "size.test"),
              "no report over the URI's size limit")
        check(all(r["rcpts"] != ["dmarc@unauth.test"] for r in found),
              "nothing sent to unauth.test")

        # The unauthorised and oversized domains are done in the same run
        # as the others (or a later one): wait for their counters.
        def m():
            return d.metrics()
        ok = wait_until(lambda: metric_value(
            m(), 'postseal_dmarcrpt_rua_skipped_total'
            '{reason="external_refused"}') >= 1 and metric_value(
            m(), 'postseal_dmarcrpt_rua_skipped_total{reason="size"}') >= 1,
            15, step=0.5)
        check(ok, "refusal and size counted")
        text = m()
        check(metric_value(text, 'postseal_dmarcrpt_reports_total'
                           '{result="queued"}') >= 5, "reports counted")
        check(metric_value(text, 'postseal_dmarcrpt_reports_total'
                           '{result="no_rcpt"}') >= 2,
              "domains without a receiver counted")
        check(metric_value(text, "postseal_dmarcrpt_messages_total") == 9,
              "nine messages counted")
        check(metric_value(text, 'postseal_dmarcrpt_dropped_total'
                           '{what="domain"}') == 0, "nothing dropped")
        log = d.read_log()
        check("event=dmarcrpt_queued" in log, "queueing logged")
        check("event=dmarcrpt_rua_skipped" in log, "skips logged")


def test_reports_off():
    w = world()
    start = w.sink.count()
    with w.daemon(reports=False) as d:
        check(send(d, "s@pass.test", "a@pass.test") == 250, "sent")
        # Two whole periods and the hand-over: nothing comes.
        wait_until(lambda: w.sink.count() > start, 2 * INTERVAL + 3)
        check(w.sink.count() == start, "dmarc.reports false: no report")
        check(metric_value(d.metrics(), "postseal_dmarcrpt_messages_total")
              == 0, "nothing counted")


if __name__ == "__main__":
    # scripts/setup.sh installs both: missing, the test fails, not skips.
    check(dnsserver.have_nsd(), "nsd is installed")
    check(shutil.which("xmllint") is not None, "xmllint is installed")
    try:
        rc = run_tests([test_reports_sent, test_reports_off])
    finally:
        if WORLD is not None:
            WORLD.stop()
    sys.exit(rc)
