"""The Dovecot LMTP harness (dovecot.py) proven with Python's smtplib.LMTP
and raw LMTP: delivery to two recipients read back from their Maildirs,
unknown users refused at RCPT, one reply per recipient after the end of
data (DATA and BDAT LAST, RFC 2033 §4.2/§4.3, which the client engine's
LMTP mode relies on), and no process left behind, also when start fails.

smtplib.LMTP reads a single reply after DATA (it has no per-recipient
replies), so each smtplib session here sends one message and quits; the
per-recipient replies are checked on the raw connection.

Skips (77) when Dovecot is not installed. Loopback only.
"""

import os
import smtplib
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import check  # noqa: E402
from dovecot import Dovecot  # noqa: E402

USERS = ["bob@r.example", "carol@r.example"]

BODY = (b"From: a@s.example\r\nSubject: harness test\r\n\r\n"
        b"first line\r\n.leading dot\r\nlast line\r\n")


def send(d, rcpts, body=BODY, sender="a@s.example"):
    """One smtplib.LMTP transaction; returns sendmail's refused dict."""
    s = smtplib.LMTP("127.0.0.1", d.port, local_hostname="client.test",
                     timeout=10)
    try:
        return s.sendmail(sender, rcpts, body)
    finally:
        s.close()


def check_clean_log(d):
    errors = d.log_errors()
    check(not errors, f"dovecot logged errors: {errors}")


def test_two_recipients_delivered():
    with Dovecot(users=USERS) as d:
        refused = send(d, ["bob@r.example", "Carol@R.Example"])
        check(refused == {}, f"refused {refused}")
        for user in ("bob", "carol"):
            msgs = d.messages(user, "r.example")
            check(len(msgs) == 1, f"{user}: {len(msgs)} messages")
            m = msgs[0]
            check(m.startswith(b"Return-Path: <a@s.example>\n"),
                  f"{user}: no Return-Path first: {m[:80]!r}")
            check(b"\r" not in m, f"{user}: CR in a Maildir file")
            check(b"\nSubject: harness test\n\nfirst line\n.leading dot\n"
                  b"last line\n" in m, f"{user}: body differs: {m!r}")
            new = os.path.join(d.maildir(user, "r.example"), "new")
            check(len(os.listdir(new)) == 1, f"{user}: new/ holds "
                  f"{os.listdir(new)}")
        check_clean_log(d)


def test_unknown_recipients_refused():
    with Dovecot(users=USERS) as d:
        refused = send(d, ["bob@r.example", "nosuch@r.example",
                           "bob@other.example"])
        check(set(refused) == {"nosuch@r.example", "bob@other.example"},
              f"refused {refused}")
        for addr, (code, text) in refused.items():
            check(code == 550 and text.startswith(b"5.1.1 ")
                  and b"doesn't exist" in text, f"{addr}: {code} {text!r}")
        check(len(d.messages("bob", "r.example")) == 1, "bob got nothing")
        check(not os.path.exists(d.maildir("nosuch", "r.example")),
              "a Maildir for an unknown user")
        check(not os.path.exists(d.maildir("bob", "other.example")),
              "a Maildir for an unknown domain")
        try:
            send(d, ["nosuch@r.example"])
            raise AssertionError("all-unknown transaction accepted")
        except smtplib.SMTPRecipientsRefused as e:
            check(e.recipients["nosuch@r.example"][0] == 550,
                  f"refusal {e.recipients}")
        check_clean_log(d)


def reply_texts(conn, n):
    return [conn.reply() for _ in range(n)]


def test_one_reply_per_recipient():
    """RFC 2033 §4.2/§4.3 as Dovecot does it: after "." and after BDAT
    LAST, one reply per recipient accepted at RCPT, in RCPT order."""
    with Dovecot(users=USERS) as d:
        c = harness.Conn(d.port)
        try:
            check(c.greeting[0] == 220, f"greeting {c.greeting}")
            code, lines = c.cmd("LHLO client.test")
            caps = {line[4:].split()[0].upper() for line in lines[1:]}
            check(code == 250 and {"PIPELINING", "CHUNKING"} <= caps,
                  f"LHLO {code} {lines}")
            # DATA, the RCPTs pipelined
            c.send("MAIL FROM:<a@s.example>\r\nRCPT TO:<bob@r.example>\r\n"
                   "RCPT TO:<nosuch@r.example>\r\n"
                   "RCPT TO:<carol@r.example>\r\nDATA\r\n")
            got = [r[0] for r in reply_texts(c, 5)]
            check(got == [250, 250, 550, 250, 354], f"envelope {got}")
            c.send(b"Subject: data\r\n\r\n..dot\r\n.\r\n")
            replies = reply_texts(c, 2)
            check([r[0] for r in replies] == [250, 250], f"data {replies}")
            check("<bob@r.example>" in replies[0][1][0]
                  and "<carol@r.example>" in replies[1][1][0],
                  f"replies not in RCPT order: {replies}")
            # BDAT LAST, pipelined with the envelope
            chunk = b"Subject: bdat\r\n\r\nbody\r\n"
            c.send(b"MAIL FROM:<>\r\nRCPT TO:<carol@r.example>\r\n"
                   b"RCPT TO:<bob@r.example>\r\n"
                   b"BDAT %d LAST\r\n" % len(chunk) + chunk)
            replies = reply_texts(c, 5)
            check([r[0] for r in replies] == [250] * 5, f"bdat {replies}")
            check("<carol@r.example>" in replies[3][1][0]
                  and "<bob@r.example>" in replies[4][1][0],
                  f"BDAT replies not in RCPT order: {replies}")
            check(c.cmd("QUIT")[0] == 221, "QUIT")
        finally:
            c.close()
        bob = d.messages("bob", "r.example")
        check(len(bob) == 2, f"bob has {len(bob)}")
        check(b"\n.dot\n" in bob[0] and b"Return-Path: <>\n" in bob[1],
              f"bob's messages {bob}")
        check(len(d.messages("carol", "r.example")) == 2, "carol")
        check_clean_log(d)


def test_any_address_without_a_user_list():
    with Dovecot() as d:
        check(send(d, ["Someone@New.Example"]) == {}, "refused")
        msgs = d.messages("someone", "new.example")
        check(len(msgs) == 1 and b"Subject: harness test" in msgs[0],
              f"messages {msgs}")
        # Dovecot writes Delivered-To only for a lone recipient
        check(b"\nDelivered-To: someone@new.example\n" in msgs[0]
              or b"\nDelivered-To: Someone@New.Example\n" in msgs[0],
              f"no Delivered-To: {msgs[0]!r}")
        check_clean_log(d)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_stop_leaves_nothing():
    d = Dovecot(users=USERS).start()
    pids = d.running_pids()
    check(len(pids) >= 2, f"master and children expected, got {pids}")
    tmp, port = d.tmp, d.port
    d.cleanup()
    left = [p for p in pids if os.path.exists(f"/proc/{p}")
            and open(f"/proc/{p}/stat").read().split(") ")[-1][0] != "Z"]
    check(not left, f"processes left: {left}")
    check(not port_open(port), "port still answers")
    check(not os.path.exists(tmp), "temp dir left")
    d.cleanup()  # twice is fine


def test_failed_start_leaves_nothing():
    d = Dovecot(extra="no_such_setting_at_all = 1\n")
    tmp = d.tmp
    try:
        with d:
            raise AssertionError("started with a bad configuration")
    except RuntimeError as e:
        check("no_such_setting_at_all" in str(e), f"error says {e}")
    check(d.proc is None and not os.path.exists(tmp), "not cleaned up")


def main():
    if not Dovecot.available():
        print("SKIP: dovecot (/usr/sbin/dovecot, dovecot-lmtpd) not "
              "installed")
        return harness.SKIP
    return harness.run_tests([
        test_two_recipients_delivered,
        test_unknown_recipients_refused,
        test_one_reply_per_recipient,
        test_any_address_without_a_user_list,
        test_stop_leaves_nothing,
        test_failed_start_leaves_nothing,
    ])


if __name__ == "__main__":
    sys.exit(main())
