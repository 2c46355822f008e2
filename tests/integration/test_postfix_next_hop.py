"""Postfix 3.7 as postseald's next hop: a private Postfix instance
(postfix.py) on loopback is postseald's relayhost and the final
destination for pfx.test, delivering to Maildirs in its temp dir.

- volume: 200 messages in several concurrent sessions, a few recipients
  each, all delivered into the right Maildirs exactly once (matched by a
  token in the Subject), the body intact through both servers; both
  queues end empty.
- unknown user: Postfix refuses it at RCPT (550 5.1.1); postseald bounces
  that recipient, delivers the other one, and its DSN reaches the
  sender's domain (bounce.test, routed to a Python sink) with
  "Action: failed" and "Status: 5.1.1".
- DSN pass-through: Postfix offers DSN, so postseald passes NOTIFY=SUCCESS,
  ORCPT and ENVID on and reports nothing itself; Postfix's own success
  DSN ("Action: delivered", Reporting-MTA Postfix) reaches the sink,
  which is Postfix's relayhost. A message without NOTIFY gets no report.

Everything is on 127.0.0.1; Postfix's only way out is the sink. Skips
(77) when Postfix is not installed or not run as root.
"""

import contextlib
import os
import re
import smtplib
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SKIP, Daemon, SmtpSink, check,  # noqa: E402
                     run_tests, wait_until)
from postfix import Postfix  # noqa: E402

USERS = ["alice", "bob", "carol", "dave", "erin"]
DOMAIN = "pfx.test"
SENDER = "s@bounce.test"


def daemon_config(pf_port, sink_port):
    """postseald: Postfix is the relayhost; reports to bounce.test go to
    the sink; short retries so a hiccup does not outlast the test."""
    return (f'relayhost: "[127.0.0.1]:{pf_port}"\n'
            "transports:\n"
            f'  - "bounce.test smtp:[127.0.0.1]:{sink_port}"\n'
            "delivery:\n"
            "  retry_initial: 1\n"
            "  retry_max: 2\n"
            "  connect_timeout: 5\n")


class Setup:
    """A sink (bounce.test, and Postfix's relayhost), Postfix, postseald;
    entered in that order, left in reverse, each stopped whatever
    happens."""

    def __enter__(self):
        with contextlib.ExitStack() as stack:
            self.sink = SmtpSink().start()
            stack.callback(self.sink.stop)
            self.pf = stack.enter_context(
                Postfix(users=USERS, domain=DOMAIN,
                        relayhost=f"[127.0.0.1]:{self.sink.port}"))
            self.d = Daemon(extra=daemon_config(self.pf.port,
                                                self.sink.port))
            stack.push(self.d)  # its __exit__ also cleans up a failed start
            self.d.start()
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)


def body_for(token, rcpts):
    # A line that starts with a dot checks transparency (RFC 5321 §4.5.2)
    # both ways: postseald's client stuffs it, Postfix's smtpd unstuffs it.
    return (f"From: {SENDER}\r\nTo: {', '.join(rcpts)}\r\n"
            f"Subject: token {token}\r\nMessage-ID: <{token}@client.test>\r\n"
            f"\r\nbody of {token}\r\n.leading dot {token}\r\nlast line\r\n")


def tokens_in(messages):
    """token -> number of Maildir files carrying it."""
    seen = {}
    for m in messages:
        found = re.search(rb"\nSubject: token (\S+)\n", m)
        if found:
            t = found.group(1).decode()
            seen[t] = seen.get(t, 0) + 1
    return seen


def reports(sink, subject):
    """DSNs (from <>) at the sink that quote the original's Subject."""
    with sink.lock:
        return [m for m in sink.messages
                if m[0] == "" and f"Subject: {subject}".encode() in m[2]]


def check_logs_clean(s):
    problems = s.pf.log_problems()
    check(not problems, f"Postfix logged problems: {problems[:5]}")
    bad = re.findall(r".*level=(?:error|crit|fatal).*", s.d.read_log())
    check(not bad, f"postseald logged errors: {bad[:5]}")


def test_volume_delivered_once():
    n, sessions = 200, 4
    plan = {}  # token -> recipients (2 or 3 of USERS, varying)
    for i in range(n):
        k = 2 + i % 2
        plan[f"v{i:03d}"] = [f"{USERS[(i + j) % len(USERS)]}@{DOMAIN}"
                             for j in range(k)]
    tokens = sorted(plan)
    errors = []

    def session(port, part):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
                c.ehlo("client.test")
                for t in part:
                    refused = c.sendmail(SENDER, plan[t],
                                         body_for(t, plan[t]))
                    if refused:
                        errors.append(f"{t}: refused {refused}")
        except (smtplib.SMTPException, OSError) as e:
            errors.append(f"session: {e!r}")

    with Setup() as s:
        threads = [threading.Thread(target=session, daemon=True,
                                    args=(s.d.smtp_port, tokens[i::sessions]))
                   for i in range(sessions)]
        for th in threads:
            th.start()
        deadline = time.monotonic() + 60
        for th in threads:
            th.join(timeout=max(0.0, deadline - time.monotonic()))
        check(not any(th.is_alive() for th in threads), "sessions finished")
        check(not errors, f"postseald accepted everything: {errors[:5]}")

        want = {u: sorted(t for t in tokens if f"{u}@{DOMAIN}" in plan[t])
                for u in USERS}
        total = sum(len(v) for v in want.values())

        def delivered():
            return sum(len(s.pf.maildir_messages(u)) for u in USERS)
        ok = wait_until(lambda: delivered() >= total, 40, step=0.2)
        if not ok:
            s.d.dump_log()
            sys.stderr.write(s.pf.log_tail())
        check(ok, f"{total} Maildir files at Postfix, got {delivered()}")
        check(wait_until(lambda: s.d.queue() == [], 15),
              f"postseald's queue empty: {len(s.d.queue())} left")
        check(wait_until(lambda: s.pf.queue_files() == [], 15),
              f"Postfix's queue empty: {s.pf.queue_files()[:5]}")
        for u in USERS:
            msgs = s.pf.maildir_messages(u)
            seen = tokens_in(msgs)
            dups = {t: c for t, c in seen.items() if c != 1}
            check(not dups, f"{u}: tokens delivered more than once: {dups}")
            check(sorted(seen) == want[u],
                  f"{u}: missing {sorted(set(want[u]) - set(seen))[:5]}, "
                  f"extra {sorted(set(seen) - set(want[u]))[:5]}")
            for m in msgs:
                t = tokens_in([m]).popitem()[0]
                check(m.startswith(f"Return-Path: <{SENDER}>\n".encode()),
                      f"{u}/{t}: Return-Path first: {m[:60]!r}")
                check(f"\nbody of {t}\n.leading dot {t}\nlast line\n"
                      .encode() in m, f"{u}/{t}: body changed: {m!r}")
        log = s.d.read_log()
        got = len(re.findall(r"event=delivered ", log))
        check(got == total, f"postseald: {total} delivered lines, got {got}")
        check("event=deferred" not in log and "event=bounced" not in log,
              "postseald: nothing deferred or bounced")
        pf_log = s.pf.log()
        sent = len(re.findall(r"status=sent \(delivered to maildir\)", pf_log))
        check(sent == total, f"Postfix: {total} maildir deliveries, {sent}")
        check(" status=deferred " not in pf_log, "Postfix deferred nothing")
        check(s.sink.count() == 0,
              f"no reports at all: the sink got {s.sink.count()}")
        check_logs_clean(s)


def test_unknown_user_bounces_with_dsn():
    subject = "t-unknown"
    with Setup() as s:
        with smtplib.SMTP("127.0.0.1", s.d.smtp_port, timeout=30) as c:
            c.ehlo("client.test")
            refused = c.sendmail(SENDER, ["ghost@pfx.test", "alice@pfx.test"],
                                 f"From: {SENDER}\r\nSubject: {subject}\r\n"
                                 f"\r\nfor a ghost\r\n")
        check(not refused, f"postseald accepted both: {refused}")
        ok = wait_until(lambda: reports(s.sink, subject), 20)
        if not ok:
            s.d.dump_log()
            sys.stderr.write(s.pf.log_tail())
        check(ok, "a DSN reached the sender's domain")
        log = s.d.read_log()
        check(re.search(r"event=bounced .*to=ghost@pfx\.test .*dsn=5\.1\.1 ",
                        log), "postseald: ghost bounced with 5.1.1")
        check(re.search(r"event=delivered .*to=alice@pfx\.test ", log),
              "postseald: alice delivered in the same transaction")
        check(re.search(r"event=bounce_queued .*to=s@bounce\.test", log),
              "postseald: a DSN queued for the sender")
        check(re.search(r"reject: RCPT .*550 5\.1\.1 <ghost@pfx\.test>",
                        s.pf.log()), "Postfix refused ghost at RCPT")
        dsns = reports(s.sink, subject)
        check(len(dsns) == 1, f"exactly one DSN, got {len(dsns)}")
        sender, rcpts, data = dsns[0]
        check(rcpts == [SENDER], f"DSN to the sender, got {rcpts}")
        for want in (b"Action: failed", b"Status: 5.1.1",
                     b"Final-Recipient: rfc822; ghost@pfx.test",
                     b"Content-Type: multipart/report",
                     b"Reporting-MTA: dns; mx.test.example"):
            check(want.lower() in data.lower(), f"DSN has {want!r}: {data!r}")
        check(b"Final-Recipient: rfc822; alice" not in data,
              "alice is not in the report")
        check(wait_until(lambda: len(s.pf.maildir_messages("alice")) == 1,
                         10), "alice got the message once")
        check(not os.path.exists(s.pf.maildir("ghost")), "no ghost Maildir")
        check(wait_until(lambda: s.d.queue() == [], 10),
              f"postseald's queue empty: {s.d.queue()}")
        check_logs_clean(s)


def test_notify_success_passed_to_postfix():
    with Setup() as s:
        with smtplib.SMTP("127.0.0.1", s.d.smtp_port, timeout=30) as c:
            c.ehlo("client.test")
            check(c.has_extn("dsn"), "postseald offers DSN")
            refused = c.sendmail(
                SENDER, ["alice@pfx.test"],
                f"From: {SENDER}\r\nSubject: t-notify\r\n\r\nreport it\r\n",
                mail_options=["ENVID=env-t-notify"],
                rcpt_options=["NOTIFY=SUCCESS",
                              "ORCPT=rfc822;orig-alice@pfx.test"])
            check(not refused, f"accepted: {refused}")
            # The control: no NOTIFY, so no success report from anyone.
            refused = c.sendmail(
                SENDER, ["bob@pfx.test"],
                f"From: {SENDER}\r\nSubject: t-plain\r\n\r\nquiet\r\n")
            check(not refused, f"accepted: {refused}")
        ok = wait_until(lambda: reports(s.sink, "t-notify"), 20)
        if not ok:
            s.d.dump_log()
            sys.stderr.write(s.pf.log_tail())
        check(ok, "Postfix's success DSN reached its relayhost (the sink)")
        check(wait_until(lambda: s.pf.maildir_messages("alice") and
                         s.pf.maildir_messages("bob"), 10),
              "both delivered at Postfix")
        dsns = reports(s.sink, "t-notify")
        check(len(dsns) == 1, f"exactly one report, got {len(dsns)}")
        sender, rcpts, data = dsns[0]
        check(rcpts == [SENDER], f"report to the sender: {rcpts}")
        for want in (b"Action: delivered", b"Status: 2.0.0",
                     b"Reporting-MTA: dns; postfix.pfx.test",
                     b"Final-Recipient: rfc822; alice@pfx.test",
                     b"Original-Recipient: rfc822;orig-alice@pfx.test",
                     b"Original-Envelope-Id: env-t-notify"):
            check(want.lower() in data.lower(), f"report has {want!r}: "
                  f"{data.decode('utf-8', 'replace')}")
        check(re.search(r"sender delivery status notification", s.pf.log()),
              "Postfix logged its success notification")
        # The sink keeps the report before it answers 250; Postfix logs
        # the delivery after the answer.
        to_sink = (r"to=<s@bounce\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                   rf"{s.sink.port}, .*status=sent ")
        check(wait_until(lambda: re.search(to_sink, s.pf.log()), 10),
              "Postfix sent the report to the sink (its relayhost)")
        check(wait_until(lambda: s.d.queue() == [] and
                         s.pf.queue_files() == [], 10), "both queues empty")
        log = s.d.read_log()
        check(not re.search(r"event=bounce_queued", log),
              "postseald queued no report of its own (next hop has DSN)")
        check(not reports(s.sink, "t-plain"), "no report without NOTIFY")
        with s.sink.lock:
            everything = [(m[0], m[1]) for m in s.sink.messages]
        check(everything == [("", [SENDER])],
              f"one report in all; the sink has {everything}")
        check_logs_clean(s)


if __name__ == "__main__":
    why = Postfix.unavailable_reason()
    if why:
        print(f"SKIP: {why}")
        sys.exit(SKIP)
    sys.exit(run_tests([test_volume_delivered_once,
                        test_unknown_user_bounces_with_dsn,
                        test_notify_success_passed_to_postfix]))
