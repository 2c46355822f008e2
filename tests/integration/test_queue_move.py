"""Moving a drained replica's queue to another: `postseal queue export`
on the stopped replica's spool, `postseal queue import` into a running
(or stopped) postseald.

Daemon A's next hop defers everything but one recipient, so its queue
holds ~50 messages (some with several recipients, one with DSN
parameters, one with the null sender, one held, one recipient already
delivered). A is stopped, its queue exported with --remove, and imported
into daemon B whose next hop (a sink that offers DSN and keeps the MAIL
and RCPT lines) takes everything: every open recipient must arrive exactly
once with its envelope and body, and A restarted must deliver nothing.
Bad archives (a flipped byte, a cut tail) are refused whole; export is
refused while A runs. Every wait is bounded; all on 127.0.0.1."""

import collections
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (POSTSEAL, Daemon, SmtpSink, check,  # noqa: E402
                     free_port, run_tests, wait_until)
import smtplib  # noqa: E402

NUM_MESSAGES = 50
DSN_MSG = 5      # sent with ENVID, RET, NOTIFY and ORCPT
NULL_SENDER = 7  # MAIL FROM:<>
HELD_MSG = 9     # held on A: must stay held on B
BIG_MSG = 11     # a body of a few hundred KiB
DONE_RCPT = "done@dest.example"  # A's next hop takes only this one
ENVID = "QX-envid-5"
ORCPT = "rfc822;orig@dest.example"


def relay_config(port, retry_initial=600):
    return (f'relayhost: "[127.0.0.1]:{port}"\n'
            "delivery:\n"
            f"  retry_initial: {retry_initial}\n"
            f"  retry_max: {retry_initial}\n"
            "  connect_timeout: 2\n")


def cli(*args, check_rc=None, stdin=None):
    """Runs postseal; returns (rc, stdout, stderr) (bytes stdout if
    stdin is bytes)."""
    binary = isinstance(stdin, bytes)
    r = subprocess.run([POSTSEAL] + list(args), capture_output=True,
                       input=stdin, text=not binary, timeout=120)
    err = r.stderr.decode() if binary else r.stderr
    if check_rc is not None and r.returncode != check_rc:
        raise AssertionError(f"postseal {' '.join(args)}: exit "
                             f"{r.returncode}, want {check_rc}\n"
                             f"stdout: {r.stdout[:2000]}\nstderr: {err}")
    return r.returncode, r.stdout, err


class DsnSink(SmtpSink):
    """A sink that offers DSN (RFC 3461) and keeps each accepted message's
    MAIL and RCPT lines as sent, in .lines: (mail_line, [rcpt_lines])."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def _dialogue(self, s, f):
        s.sendall(b"220 sink.test ESMTP\r\n")
        mail, rcpts, rcpt_lines = None, [], []
        for _ in range(100000):
            line = f.readline(4096)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd[:4].upper()
            if verb == "EHLO":
                s.sendall(b"250-sink.test\r\n250-PIPELINING\r\n250-DSN\r\n"
                          b"250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == "MAIL":
                mail, rcpts, rcpt_lines = cmd, [], []
                s.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                rcpts.append(cmd[8:].split(">")[0].lstrip("<"))
                rcpt_lines.append(cmd)
                s.sendall(b"250 2.1.5 Ok\r\n")
            elif verb == "DATA":
                s.sendall(b"354 go ahead\r\n")
                data = []
                for _ in range(10000000):
                    dl = f.readline(65536)
                    if not dl or dl == b".\r\n":
                        break
                    data.append(dl[1:] if dl.startswith(b".") else dl)
                sender = mail[10:].split(">")[0].lstrip("<")
                with self.lock:
                    self.messages.append((sender, list(rcpts),
                                          b"".join(data)))
                    self.lines.append((mail, list(rcpt_lines)))
                s.sendall(b"250 2.0.0 Ok: queued\r\n")
            elif verb in ("RSET", "NOOP"):
                s.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                s.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                s.sendall(b"502 5.5.2 Command not recognized\r\n")


def msg_rcpts(i):
    if i == 0:
        return [DONE_RCPT, "m0-a@dest.example"]
    if i % 7 == 3:
        return [f"m{i}-{k}@dest.example" for k in "abc"] + \
            [f"m{i}-d@other.example"]
    return [f"m{i}@dest.example"]


def msg_sender(i):
    return "" if i == NULL_SENDER else f"s{i}@example.org"


def msg_body(i):
    text = (f"From: s{i}@example.org\r\nTo: m{i}@dest.example\r\n"
            f"Subject: move {i}\r\nMessage-ID: <move{i}@example.org>\r\n\r\n"
            f"body line {i}\r\n")
    if i == BIG_MSG:
        text += "".join(f"filler {k:06d} {'x' * 60}\r\n" for k in range(4000))
    return text


def send_messages(d, indexes):
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        for i in indexes:
            mopts, ropts = [], []
            if i == DSN_MSG:
                mopts = [f"ENVID={ENVID}", "RET=HDRS"]
                ropts = ["NOTIFY=SUCCESS,FAILURE", f"ORCPT={ORCPT}"]
            s.sendmail(msg_sender(i), msg_rcpts(i), msg_body(i),
                       mail_options=mopts, rcpt_options=ropts)


def index_of(m):
    """The message number of a `queue list --json` entry (or sink
    message) from its recipients."""
    for r in m:
        if r.startswith("m") and "-" in r.split("@")[0]:
            return int(r.split("@")[0][1:].split("-")[0])
        if r.startswith("m"):
            return int(r.split("@")[0][1:])
    raise AssertionError(f"unknown recipients {m}")


def archive_records(data):
    """Walks the documented format: header, then "PQX" type u64-length
    payload u64-checksum records. Returns [(type, offset, length)]."""
    header = b"postseal-queue-export 1\n"
    check(data.startswith(header), f"archive header: {data[:30]!r}")
    off, out = len(header), []
    for _ in range(100000):
        if off >= len(data):
            break
        check(data[off:off + 3] == b"PQX", f"record magic at {off}")
        n = int.from_bytes(data[off + 4:off + 12], "little")
        out.append((data[off + 3:off + 4], off, 12 + n + 8))
        off += 12 + n + 8
    check(off == len(data), "records fill the archive exactly")
    return out


def open_rcpts():
    """Every recipient A could not deliver: what must arrive at B."""
    want = collections.Counter()
    for i in range(NUM_MESSAGES):
        for r in msg_rcpts(i):
            if r != DONE_RCPT:
                want[r] += 1
    return want


def queue_a(sink_a):
    """Daemon A with NUM_MESSAGES queued, one recipient delivered, HELD_MSG
    held; stopped. Returns A (the caller cleans up)."""
    a = Daemon(extra=relay_config(sink_a.port))
    a.start()
    try:
        send_messages(a, range(NUM_MESSAGES))
        check(wait_until(lambda: sink_a.count() == 1, 30),
              f"A delivered {DONE_RCPT} only: {sink_a.count()}")
        check(sink_a.messages[0][1] == [DONE_RCPT], "the delivered one")
        q = a.queue()
        check(len(q) == NUM_MESSAGES, f"A queued {len(q)}")
        held = [m["queue_id"] for m in q
                if index_of(m["recipients"]) == HELD_MSG]
        cli("queue", "hold", held[0], "-d", a.spool, check_rc=0)
        # Export is refused while A runs, and creates nothing.
        out = os.path.join(a.tmp, "running.qx")
        rc, _, err = cli("queue", "export", "-d", a.spool, "--out", out,
                         check_rc=1)
        check("postseald is running" in err and "stop it first" in err,
              f"export on a running daemon: {err}")
        check(not os.path.exists(out), "no archive left behind")
    finally:
        check(a.stop() == 0, "A exits 0")
    return a


def check_delivered(sink_b, want):
    """Every open recipient arrived exactly once, envelope and body
    intact."""
    got = collections.Counter()
    for sender, rcpts, data in sink_b.messages:
        i = index_of(rcpts)
        got.update(rcpts)
        check(sender == msg_sender(i), f"message {i} sender {sender!r}")
        check(f"Subject: move {i}\r\n".encode() in data and
              data.endswith(msg_body(i).split("\r\n\r\n", 1)[1].encode()),
              f"message {i} body intact")
        check(b"Received: " in data, f"message {i} kept its Received:")
    check(got == want, f"each open recipient once: missing "
          f"{want - got}, extra {got - want}")
    mail, rcpt_lines = next(
        lines for lines, m in zip(sink_b.lines, sink_b.messages)
        if index_of(m[1]) == DSN_MSG)
    check(f"ENVID={ENVID}" in mail and "RET=HDRS" in mail,
          f"ENVID and RET kept: {mail}")
    check(all("NOTIFY=SUCCESS,FAILURE" in r and f"ORCPT={ORCPT}" in r
              for r in rcpt_lines), f"NOTIFY and ORCPT kept: {rcpt_lines}")


def test_move_to_running_daemon():
    sink_a = SmtpSink(rcpt_reply=lambda addr: None if addr == DONE_RCPT
                      else (451, "4.3.0 try later")).start()
    sink_b = DsnSink().start()
    a = None
    try:
        a = queue_a(sink_a)
        rc, out, _ = cli("queue", "list", "--json", "-d", a.spool,
                         check_rc=0)
        check('"recipients":["m0-a@dest.example"]' in out,
              "A lists only the open recipient of message 0")
        archive = os.path.join(a.tmp, "a.qx")
        want = open_rcpts()
        rc, out, _ = cli("queue", "export", "-c", a.config_path, "--out",
                         archive, "--remove", check_rc=0)
        check(f"exported {NUM_MESSAGES} messages ({sum(want.values())} "
              "recipients)" in out and "removed" in out, f"export: {out}")
        check(a.queue() == [], "A's queue is empty after --remove")
        data = open(archive, "rb").read()
        recs = archive_records(data)
        check(len(recs) == NUM_MESSAGES + 1 and recs[-1][0] == b"E" and
              all(r[0] == b"M" for r in recs[:-1]), "50 messages, an end")
        rc, _, err = cli("queue", "export", "-d", a.spool, "--out",
                         archive, check_rc=1)
        check("not overwriting" in err, f"an archive is never replaced: {err}")

        # A flipped byte in message 21's body, and a cut tail: refused.
        _, off, length = recs[20]
        bad = bytearray(data)
        bad[off + length - 20] ^= 0x20
        bad_path = os.path.join(a.tmp, "bad.qx")
        open(bad_path, "wb").write(bytes(bad))
        cut_path = os.path.join(a.tmp, "cut.qx")
        open(cut_path, "wb").write(data[:recs[-1][1]])

        with Daemon(extra=relay_config(sink_b.port, retry_initial=1)) as b:
            rc, out, err = cli("queue", "import", "-c", b.config_path,
                               "--in", bad_path, check_rc=1)
            check("message 21: checksum mismatch" in err and
                  "nothing imported" in err, f"flipped byte: {err}")
            rc, out, err = cli("queue", "import", "-d", b.spool, "--in",
                               cut_path, check_rc=1)
            check(f"message {NUM_MESSAGES + 1}:" in err and
                  "truncated" in err, f"cut tail: {err}")
            check(b.queue() == [] and sink_b.count() == 0,
                  "nothing imported from bad archives")

            rc, out, _ = cli("queue", "import", "-c", b.config_path,
                             "--in", archive, check_rc=0)
            check(out.count(" imported as ") == NUM_MESSAGES and
                  f"imported {NUM_MESSAGES} messages "
                  f"({sum(want.values())} recipients)" in out,
                  f"import summary: {out[-300:]}")
            held = [r for r in msg_rcpts(HELD_MSG)]
            for r in held:
                want[r] -= 1
            want += collections.Counter()  # drop zero counts
            check(wait_until(lambda: sum(len(m[1]) for m in sink_b.messages)
                             >= sum(want.values()), 60),
                  f"B delivered {sink_b.count()} messages")
            time.sleep(1.0)  # nothing more, nothing twice
            check_delivered(sink_b, want)
            # The held message is held on B too, until released there.
            q = b.queue()
            check(len(q) == 1 and q[0]["held"] and
                  q[0]["recipients"] == held, f"held on B: {q}")
            cli("queue", "release", q[0]["queue_id"], "-d", b.spool,
                check_rc=0)
            check(wait_until(lambda: b.queue() == [], 30),
                  "released and delivered")
            for r in held:
                want[r] += 1
            check_delivered(sink_b, want)
            log = b.read_log()
            check(log.count("event=imported") == NUM_MESSAGES,
                  "one imported line per message")

        # A restarted (its next hop now takes everything) has nothing.
        sink_a.rcpt_reply = None
        a.start()
        time.sleep(2.0)
        check(a.queue() == [] and sink_a.count() == 1,
              f"A delivers nothing again: {sink_a.count()}")
        check(a.stop() == 0, "A exits 0")
        check(not a.sanitizer_reports(), "no sanitizer findings on A")
    finally:
        if a is not None:
            a.cleanup()
        sink_a.stop()
        sink_b.stop()


def test_offline_import_through_pipes():
    """export --ids to stdout (a pipe), import from stdin into a stopped
    daemon; the messages go out once it starts."""
    sink_a = SmtpSink(rcpt_reply=lambda addr: (451, "4.3.0 later")).start()
    sink_b = DsnSink().start()
    a = Daemon(extra=relay_config(sink_a.port))
    b = Daemon(extra=relay_config(sink_b.port, retry_initial=1))
    try:
        a.start()
        send_messages(a, [1, 2, 3, DSN_MSG])
        check(wait_until(lambda: len(a.queue()) == 4, 10), "four queued")
        check(a.stop() == 0, "A exits 0")
        ids = {index_of(m["recipients"]): m["queue_id"] for m in a.queue()}
        pick = f"{ids[3]},{ids[DSN_MSG]}"
        rc, _, err = cli("queue", "export", "-d", a.spool, "--ids", pick,
                         "--remove", check_rc=2, stdin=b"")
        check("--remove needs" in err, f"--remove to a pipe: {err}")
        rc, _, err = cli("queue", "export", "-d", a.spool, "--ids",
                         "0000000000000001", check_rc=1, stdin=b"")
        check("0000000000000001: no such message" in err, f"unknown: {err}")
        rc, data, err = cli("queue", "export", "-d", a.spool, "--ids", pick,
                            check_rc=0, stdin=b"")
        check("exported 2 messages (5 recipients) to stdout" in err,
              f"summary on stderr: {err}")
        check(len(a.queue()) == 4, "without --remove A keeps them")

        rc, out, _ = cli("queue", "import", "-d", b.spool, "--in", "-",
                         check_rc=0, stdin=data)
        out = out.decode()
        check("imported 2 messages (5 recipients) into the spool" in out,
              f"offline import: {out}")
        check(f"{ids[3]} imported as " in out, f"old -> new id: {out}")
        b.start()
        want = collections.Counter(msg_rcpts(3) + msg_rcpts(DSN_MSG))
        check(wait_until(lambda: sum(len(m[1]) for m in sink_b.messages)
                         >= 5, 30), "B delivered the imported messages")
        time.sleep(0.5)
        check_delivered(sink_b, want)
        check(b.stop() == 0, "B exits 0")
        check(not b.sanitizer_reports(), "no sanitizer findings on B")
    finally:
        a.cleanup()
        b.cleanup()
        sink_a.stop()
        sink_b.stop()


def test_batches_both_paths():
    """Three 7 MiB messages and a small one: more than one IMPORT batch
    (16 MiB each), into a stopped daemon and then a running one."""
    sink_a = SmtpSink(rcpt_reply=lambda addr: (451, "4.3.0 later")).start()
    sink_b = DsnSink().start()
    a = Daemon(extra=relay_config(sink_a.port))
    b = Daemon(extra=relay_config(sink_b.port, retry_initial=1))
    big = "".join(f"{k:07d} {'y' * 90}\r\n" for k in range(70000))
    try:
        a.start()
        with smtplib.SMTP("127.0.0.1", a.smtp_port, timeout=60) as s:
            for i in range(4):
                s.sendmail(f"s{i}@example.org", [f"m{i}@dest.example"],
                           f"Subject: move {i}\r\n\r\n" +
                           (big if i < 3 else "") + f"body line {i}\r\n")
        check(wait_until(lambda: len(a.queue()) == 4, 20), "four queued")
        check(a.stop() == 0, "A exits 0")
        archive = os.path.join(a.tmp, "big.qx")
        cli("queue", "export", "-d", a.spool, "--out", archive, check_rc=0)
        check(os.path.getsize(archive) > 3 * 7_000_000, "a big archive")
        rc, out, _ = cli("queue", "import", "-d", b.spool, "--in", archive,
                         check_rc=0)
        check("imported 4 messages (4 recipients) into the spool" in out,
              f"offline, two batches: {out}")
        b.start()
        rc, out, _ = cli("queue", "import", "-d", b.spool, "--in", archive,
                         check_rc=0)
        check(out.count(" imported as ") == 4 and
              "imported 4 messages (4 recipients)\n" in out,
              f"online, two batches: {out}")
        check(wait_until(lambda: sink_b.count() == 8, 60),
              f"B delivered both imports: {sink_b.count()}")
        got = collections.Counter(m[1][0] for m in sink_b.messages)
        check(got == collections.Counter(
            {f"m{i}@dest.example": 2 for i in range(4)}), f"each twice: {got}")
        for sender, rcpts, data in sink_b.messages:
            i = int(rcpts[0][1])
            check(data.endswith(f"body line {i}\r\n".encode()) and
                  len(data) > (7_000_000 if i < 3 else 0),
                  f"message {i} whole")
        check(b.stop() == 0, "B exits 0")
        check(not b.sanitizer_reports(), "no sanitizer findings on B")
    finally:
        a.cleanup()
        b.cleanup()
        sink_a.stop()
        sink_b.stop()


def control_exchange(path, payload):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    s.connect(path)
    s.sendall(payload)
    got = b""
    for _ in range(1000):
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    s.close()
    return got.decode()


def test_control_import_refusals():
    """IMPORT on the control socket checks before it stages anything."""
    with Daemon(extra=relay_config(free_port())) as d:
        ctl = os.path.join(d.spool, "control")
        r = control_exchange(ctl, b"IMPORT 5\nabcde")
        check(r.startswith("ERR message 1: not an archive record"), r)
        r = control_exchange(ctl, b"IMPORT 99999999999999\n")
        check(r.startswith("ERR IMPORT of 99999999999999 octets is over"), r)
        r = control_exchange(ctl, b"IMPORT 012\n")
        check(r.startswith("ERR bad IMPORT length"), r)
        r = control_exchange(ctl, b"IMPORT 3\nPQXtoo long")
        check(r.startswith("ERR octets after the IMPORT payload"), r)
        check(d.queue() == [], "nothing queued")


if __name__ == "__main__":
    sys.exit(run_tests([test_move_to_running_daemon,
                        test_offline_import_through_pipes,
                        test_batches_both_paths,
                        test_control_import_refusals]))
