"""Real SMTP clients against postseald: Python's smtplib, swaks with
pipelining, Postfix's smtp-source. Every message that got a 250 must be in
the spool, byte for byte, with its envelope and a Received: header."""

import email
import email.policy
import email.utils
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, run_tests  # noqa: E402


def queued_id(reply_text):
    m = re.search(r"queued as ([0-9A-F]{16})", reply_text)
    check(m is not None, f"250 reply carries a queue id: {reply_text!r}")
    return m.group(1)


def test_smtplib_roundtrip():
    with Daemon() as d:
        msg = email.message.EmailMessage()
        msg["From"] = "alice@example.org"
        msg["To"] = "bob@example.net, carol@example.net"
        msg["Subject"] = "postseal integration"
        msg["Message-ID"] = "<roundtrip@test>"
        msg.set_content("Hello.\n.leading dot survives\n")
        with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=10) as s:
            code, ehlo = s.ehlo("client.test")
            check(code == 250, "EHLO 250")
            for ext in (b"PIPELINING", b"8BITMIME", b"SIZE", b"SMTPUTF8",
                        b"ENHANCEDSTATUSCODES", b"CHUNKING", b"DSN"):
                check(ext in ehlo, f"EHLO advertises {ext!r}: {ehlo!r}")
            s.mail("alice@example.org", ["BODY=8BITMIME", "RET=HDRS",
                                         "ENVID=abc+2Bdef"])
            s.rcpt("bob@example.net", ["NOTIFY=SUCCESS,FAILURE",
                                       "ORCPT=rfc822;bob@example.net"])
            s.rcpt("carol@example.net")
            code, text = s.data(msg.as_bytes(policy=email.policy.SMTP))
            check(code == 250, f"DATA accepted: {code} {text!r}")
            qid = queued_id(text.decode())
        q = {e["queue_id"]: e for e in d.queue()}
        check(qid in q, f"{qid} listed in the queue: {list(q)}")
        entry = q[qid]
        check(entry["sender"] == "alice@example.org", f"sender: {entry}")
        check(entry["recipients"] == ["bob@example.net", "carol@example.net"],
              f"recipients: {entry}")
        stored = d.queue_cat(qid)
        check(stored.startswith(b"Received: from client.test ([127.0.0.1])"),
              f"Received: header first: {stored[:120]!r}")
        check(f"id {qid}".encode() in stored.split(b"\r\n\r\n")[0],
              "Received: header names the queue id")
        body = stored.split(b"\r\n", 1)[1]
        parsed = email.message_from_bytes(stored)
        check(parsed["Message-ID"] == "<roundtrip@test>", "headers kept")
        check(b"\r\n.leading dot survives\r\n" in body,
              "dot-unstuffed body stored with CRLF")
        check(d.stop() == 0, "SIGTERM exits 0")


def send_raw(port, lines):
    """Sends SMTP lines one by one, returns the replies (bytes)."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        f = sock.makefile("rb")

        def reply():
            out = b""
            while True:
                line = f.readline()
                out += line
                if len(line) < 4 or line[3:4] != b"-":
                    return out
        replies.append(reply())
        for line in lines:
            sock.sendall(line)
            replies.append(reply())
    return replies


def test_received_header():
    """Our Received: field is put in front of the body as the body arrives
    (no copy of the body afterwards): it must name the queue id of the 250,
    the one recipient of this transaction only (not one of an aborted
    transaction, none for two), carry the time of receipt, and be there
    exactly once, for DATA and for BDAT."""
    with Daemon() as d:
        body = b"From: a@example.org\r\nSubject: rcv\r\n\r\nhi\r\n"
        cases = [
            ("one rcpt, DATA", [b"MAIL FROM:<a@example.org>\r\n",
                                b"RCPT TO:<one@example.net>\r\n",
                                b"DATA\r\n", body + b".\r\n"],
             b"one@example.net"),
            ("after RSET, DATA", [b"MAIL FROM:<a@example.org>\r\n",
                                  b"RCPT TO:<old@example.net>\r\n",
                                  b"RSET\r\n",
                                  b"MAIL FROM:<a@example.org>\r\n",
                                  b"RCPT TO:<new@example.net>\r\n",
                                  b"DATA\r\n", body + b".\r\n"],
             b"new@example.net"),
            ("two rcpts, DATA", [b"MAIL FROM:<a@example.org>\r\n",
                                 b"RCPT TO:<r1@example.net>\r\n",
                                 b"RCPT TO:<r2@example.net>\r\n",
                                 b"DATA\r\n", body + b".\r\n"],
             None),
            ("three rcpts, DATA", [b"MAIL FROM:<a@example.org>\r\n",
                                   b"RCPT TO:<r1@example.net>\r\n",
                                   b"RCPT TO:<r2@example.net>\r\n",
                                   b"RCPT TO:<r3@example.net>\r\n",
                                   b"DATA\r\n", body + b".\r\n"],
             None),
            ("one rcpt, BDAT", [b"MAIL FROM:<a@example.org>\r\n",
                                b"RCPT TO:<bdat@example.net>\r\n",
                                b"BDAT %d LAST\r\n" % len(body) + body],
             b"bdat@example.net"),
        ]
        for label, lines, rcpt in cases:
            t0 = time.time()
            replies = send_raw(d.smtp_port,
                               [b"EHLO client.test\r\n"] + lines +
                               [b"QUIT\r\n"])
            last = replies[-2].decode()
            check(last.startswith("250"), f"{label}: accepted: {replies}")
            qid = queued_id(last)
            stored = d.queue_cat(qid)
            head = stored.split(b"\r\n\r\n")[0]
            check(stored.startswith(b"Received: from client.test ([127.0.0.1])"),
                  f"{label}: ours on top: {stored[:160]!r}")
            check(head.count(b"(postseal)") == 1,
                  f"{label}: exactly one of ours: {head!r}")
            check(f"id {qid}".encode() in head, f"{label}: names {qid}")
            check(b"0000000000000000" not in head,
                  f"{label}: no placeholder left: {head!r}")
            for other in (b"old@example.net", b"r1@example.net"):
                check(other not in head, f"{label}: no {other!r} in it")
            if rcpt is not None:
                check(b"for <" + rcpt + b">" in head,
                      f"{label}: for <{rcpt.decode()}>: {head!r}")
            else:
                check(b"for <" not in head, f"{label}: no for: {head!r}")
            field = email.message_from_bytes(stored)["Received"]
            when = email.utils.parsedate_to_datetime(field.split(";")[-1])
            check(abs(when.timestamp() - t0) < 5,
                  f"{label}: time of receipt {when} vs {t0}")
            check(stored.endswith(b"\r\nhi\r\n"), f"{label}: body kept")


def test_swaks_pipelining():
    check(shutil.which("swaks") is not None, "swaks installed (setup.sh)")
    with Daemon() as d:
        ids = []
        for i in range(5):
            out = subprocess.run(
                ["swaks", "--server", f"127.0.0.1:{d.smtp_port}", "--pipeline",
                 "--from", "p@example.org", "--to",
                 "r1@example.net,r2@example.net", "--helo", "swaks.test",
                 "--header", f"Subject: swaks {i}", "--timeout", "10"],
                capture_output=True, text=True, timeout=30)
            check(out.returncode == 0, f"swaks succeeded: {out.stdout[-800:]}")
            check("PIPELINING" in out.stdout, "swaks saw PIPELINING")
            ids.append(queued_id(out.stdout))
        queued = {e["queue_id"] for e in d.queue()}
        check(set(ids) <= queued, f"all swaks messages queued: {ids}")


def test_smtp_source_load():
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    check(os.path.exists(source), "smtp-source installed (setup.sh)")
    n = 2000
    with Daemon() as d:
        out = subprocess.run(
            [source, "-s", "50", "-m", str(n), "-l", "4096", "-f",
             "load@example.org", "-t", "sink@example.net",
             f"127.0.0.1:{d.smtp_port}"],
            capture_output=True, text=True, timeout=300)
        check(out.returncode == 0,
              f"smtp-source exit 0: {out.stdout[-500:]} {out.stderr[-500:]}")
        log = d.read_log()
        acked = len(re.findall(r"event=queued ", log))
        check(acked == n, f"{n} messages queued per the log, got {acked}")
        q = d.queue()
        check(len(q) == n, f"{n} messages in the spool, got {len(q)}")
        check(all(e["recipients"] == ["sink@example.net"] for e in q),
              "every recipient kept")


if __name__ == "__main__":
    sys.exit(run_tests([test_smtplib_roundtrip, test_received_header,
                        test_swaks_pipelining,
                        test_smtp_source_load]))
