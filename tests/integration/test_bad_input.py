"""Bad input against the running daemon: each limit and attack from the
relay-core issue gets the RFC reply, the session continues or closes as
the RFC says, and nothing smuggled or refused reaches the spool."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Conn, Daemon, check, run_tests  # noqa: E402

# The test client (127.0.0.1) is NOT in mynetworks, so relaying is judged
# as for a stranger; ours.test is a local domain.
EXTRA = ("local_domains:\n  - ours.test\n"
         "limits:\n  message_size: 65536\n  recipients: 100\n"
         "  header_size: 1M\n")


def daemon():
    return Daemon(extra=EXTRA, mynetworks=["192.0.2.0/24"])


def session(d):
    c = Conn(d.smtp_port)
    check(c.greeting[0] == 220, f"greeting 220: {c.greeting}")
    code, _ = c.cmd("EHLO client.test")
    check(code == 250, "EHLO 250")
    return c


def expect(reply, code, what):
    check(reply[0] == code, f"{what}: want {code}, got {reply}")


def test_long_command_line():
    with daemon() as d:
        c = session(d)
        expect(c.cmd("NOOP " + "x" * 600), 500, "command line > 512")
        expect(c.cmd("NOOP"), 250, "session continues after 500")
        c.close()


def test_long_text_line():
    with daemon() as d:
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ours.test>"), 250, "MAIL")
        expect(c.cmd("RCPT TO:<u@ours.test>"), 250, "RCPT")
        expect(c.cmd("DATA"), 354, "DATA")
        c.send("Subject: x\r\n\r\n" + "y" * 1200 + "\r\n.\r\n")
        code, _ = c.reply()
        check(code // 100 == 5, f"text line > 1000 rejected, got {code}")
        expect(c.cmd("RSET"), 250, "session continues")
        c.close()
        check(d.queue() == [], "nothing queued")


def test_message_over_size():
    with daemon() as d:
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ours.test> SIZE=100000"), 552,
               "SIZE over limit at MAIL")
        expect(c.cmd("MAIL FROM:<a@ours.test>"), 250, "MAIL")
        expect(c.cmd("RCPT TO:<u@ours.test>"), 250, "RCPT")
        expect(c.cmd("DATA"), 354, "DATA")
        line = "z" * 998 + "\r\n"
        c.send("Subject: big\r\n\r\n" + line * 80 + ".\r\n")
        expect(c.reply(), 552, "body over SIZE")
        expect(c.cmd("NOOP"), 250, "session continues")
        c.close()
        check(d.queue() == [], "nothing queued")


def test_too_many_recipients():
    with daemon() as d:
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ours.test>"), 250, "MAIL")
        for i in range(100):
            expect(c.cmd(f"RCPT TO:<u{i}@ours.test>"), 250, f"RCPT {i}")
        expect(c.cmd("RCPT TO:<u100@ours.test>"), 452, "101st RCPT")
        expect(c.cmd("DATA"), 354, "DATA with 100")
        c.send("Subject: many\r\n\r\nhi\r\n.\r\n")
        expect(c.reply(), 250, "message for 100 recipients")
        c.close()
        q = d.queue()
        check(len(q) == 1 and len(q[0]["recipients"]) == 100,
              f"one message, 100 recipients: {[len(e['recipients']) for e in q]}")


def test_header_too_large():
    d = Daemon(extra=EXTRA.replace("message_size: 65536", "message_size: 4M"),
               mynetworks=["192.0.2.0/24"])
    with d:
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ours.test>"), 250, "MAIL")
        expect(c.cmd("RCPT TO:<u@ours.test>"), 250, "RCPT")
        expect(c.cmd("DATA"), 354, "DATA")
        hdr = "X-Filler: " + "h" * 900 + "\r\n"
        c.send(hdr * 1200 + "\r\nbody\r\n.\r\n")  # ~1.1 MB of header
        expect(c.reply(), 552, "header section > 1 MiB")
        expect(c.cmd("NOOP"), 250, "session continues")
        c.close()
        check(d.queue() == [], "nothing queued")


def test_smuggling_bare_lf():
    """The classic smuggling payload: a fake end of data with bare LF,
    followed by a second transaction. Only <CRLF>.<CRLF> ends DATA, the
    bare LF rejects the whole thing, so neither message is queued."""
    with daemon() as d:
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ours.test>"), 250, "MAIL")
        expect(c.cmd("RCPT TO:<u@ours.test>"), 250, "RCPT")
        expect(c.cmd("DATA"), 354, "DATA")
        c.send("Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<evil@ours.test>\n"
               "RCPT TO:<victim@ours.test>\nDATA\nSubject: smuggled\n\nbad\n"
               ".\r\nMAIL FROM:<evil2@ours.test>\r\n\r\n.\r\n")
        code, lines = c.reply()
        check(code // 100 == 5, f"bare LF rejected with 5xx: {code} {lines}")
        expect(c.cmd("NOOP"), 250, "session continues, no stray replies")
        c.close()
        check(d.queue() == [], "no message from the smuggled part")


def test_smuggling_bare_cr():
    with daemon() as d:
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ours.test>"), 250, "MAIL")
        expect(c.cmd("RCPT TO:<u@ours.test>"), 250, "RCPT")
        expect(c.cmd("DATA"), 354, "DATA")
        c.send("Subject: one\r\n\r\nfirst\r.\rsecond\r\n.\r\n")
        code, _ = c.reply()
        check(code // 100 == 5, f"bare CR rejected with 5xx: {code}")
        c.close()
        check(d.queue() == [], "nothing queued")


def test_pipelining_after_data():
    with daemon() as d:
        c = session(d)
        c.send("MAIL FROM:<a@ours.test>\r\nRCPT TO:<u@ours.test>\r\nDATA\r\n"
               "Subject: early\r\n\r\nbody\r\n.\r\n")
        expect(c.reply(), 250, "pipelined MAIL")
        expect(c.reply(), 250, "pipelined RCPT")
        code, lines = c.reply()
        check(code == 554, f"data before 354 refused: {code} {lines}")
        check(c.closed(), "session closed after pipelining abuse")
        check(d.queue() == [], "nothing queued")


def test_addresses():
    cases = [
        ("MAIL FROM:<a`id`@ours.test>", (501, 553), "backquote"),
        ("MAIL FROM:<a$(id)@ours.test>", (501, 553), "dollar"),
        ("MAIL FROM:<a|cat@ours.test>", (501, 553), "pipe"),
        ("MAIL FROM:<a;b@ours.test>", (501, 553), "semicolon"),
        ("MAIL FROM:<a\x00b@ours.test>", (500, 501, 553), "NUL"),
        ("MAIL FROM:<" + "l" * 65 + "@ours.test>", (501, 553),
         "local part > 64"),
        ("MAIL FROM:<a@>", (501, 553), "empty domain"),
        ("MAIL FROM:<a@ours.test", (501,), "no closing bracket"),
    ]
    with daemon() as d:
        c = session(d)
        for cmd, codes, what in cases:
            code, lines = c.cmd(cmd)
            check(code in codes, f"{what}: want {codes}, got {code} {lines}")
        expect(c.cmd("MAIL FROM:<>"), 250, "null sender allowed in MAIL")
        expect(c.cmd("RCPT TO:<>"), 501, "null path refused in RCPT")
        expect(c.cmd("RCPT TO:<postmaster>"), 250,
               "RCPT TO:<postmaster> (RFC 5321 4.5.1) accepted")
        c.close()


def test_open_relay_probes():
    probes = ["u%ext.example@ours.test", "ext.example!u@ours.test",
              "@ours.test:u@ext.example", '"u@ext.example"@ours.test',
              "u@ext.example"]
    with daemon() as d:
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ext.example>"), 250, "MAIL")
        for p in probes:
            code, lines = c.cmd(f"RCPT TO:<{p}>")
            check(code == 554, f"relay probe {p}: want 554, got {code} {lines}")
        expect(c.cmd("RCPT TO:<u@ours.test>"), 250, "local domain accepted")
        c.close()
    with Daemon(extra=EXTRA) as d:  # now 127.0.0.0/8 is in mynetworks
        c = session(d)
        expect(c.cmd("MAIL FROM:<a@ours.test>"), 250, "MAIL")
        expect(c.cmd("RCPT TO:<u@ext.example>"), 250,
               "trusted client may relay")
        c.close()


if __name__ == "__main__":
    sys.exit(run_tests([
        test_long_command_line, test_long_text_line, test_message_over_size,
        test_too_many_recipients, test_header_too_large, test_smuggling_bare_lf,
        test_smuggling_bare_cr, test_pipelining_after_data, test_addresses,
        test_open_relay_probes]))
