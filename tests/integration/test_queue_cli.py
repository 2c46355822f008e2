"""Queue operations from the command line: `postseal queue hold | release |
delete | flush | summary | list` against a spool written by the real
postseald.

Offline path (postseald stopped): the CLI takes the spool lock and appends
HOLD/RELEASE/DONE records itself; the state is read back with
`queue list --json` and must survive the daemon's recovery. Online path:
the CLI talks to the control socket (<spool>/control): a scripted server
stands in for postseald to test the client on its own, and the real
daemon serves it in test_daemon_honours_hold and test_online_daemon.
Every wait is bounded; all on 127.0.0.1."""

import fcntl
import json
import os
import smtplib
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (POSTSEAL, Daemon, SmtpSink, check,  # noqa: E402
                     free_port, run_tests, wait_until)

# Message i goes to these recipients (domains for the summary).
RCPTS = [["a@one.example", "b@Two.Example"],
         ["c@one.example"],
         ["d@three.example"]]


def relay_config(port, retry_initial=600):
    return (f'relayhost: "[127.0.0.1]:{port}"\n'
            "delivery:\n"
            f"  retry_initial: {retry_initial}\n"
            f"  retry_max: {retry_initial}\n"
            "  connect_timeout: 2\n")


def cli(*args, check_rc=None):
    """Runs postseal; returns (rc, stdout, stderr)."""
    r = subprocess.run([POSTSEAL] + list(args), capture_output=True,
                       text=True, timeout=60)
    if check_rc is not None and r.returncode != check_rc:
        raise AssertionError(f"postseal {' '.join(args)}: exit "
                             f"{r.returncode}, want {check_rc}\n"
                             f"stdout: {r.stdout}\nstderr: {r.stderr}")
    return r.returncode, r.stdout, r.stderr


def by_id(d):
    return {m["queue_id"]: m for m in d.queue()}


def queue_three(d):
    """Sends the three messages; returns their queue ids in order."""
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        for i, rcpts in enumerate(RCPTS):
            body = f"From: s@example.org\r\nSubject: token q{i}\r\n\r\nq{i}\r\n"
            s.sendmail("s@example.org", rcpts, body)
    check(wait_until(lambda: len(d.queue()) == 3, 10), "three queued")
    ids = {}
    for m in d.queue():
        i = next(k for k, r in enumerate(RCPTS) if m["recipients"] == r)
        ids[i] = m["queue_id"]
    return [ids[0], ids[1], ids[2]]


def stopped_daemon_with_three():
    """A daemon whose relayhost is a closed port, three messages queued,
    then stopped. Returns (daemon, ids); the caller cleans up."""
    d = Daemon(extra=relay_config(free_port()))
    d.start()
    try:
        ids = queue_three(d)
    finally:
        check(d.stop() == 0, "postseald exits 0")
    return d, ids


def test_offline_hold_release_delete():
    d, (m0, m1, m2) = stopped_daemon_with_three()
    try:
        rc, out, err = cli("queue", "hold", "--all", "-c", d.config_path,
                           check_rc=0)
        check(out.count(": held") == 3 and "3 messages held" in out,
              f"hold --all reports each and the count: {out}")
        check(all(m["held"] for m in d.queue()), "all three held")

        rc, out, _ = cli("queue", "release", m1, "-d", d.spool, check_rc=0)
        check(out == f"postseal: {m1}: released\n", f"release says so: {out}")
        rc, out, _ = cli("queue", "delete", m2, "--spool", d.spool,
                         check_rc=0)
        check(out == f"postseal: {m2}: deleted (1 recipient)\n",
              f"delete says so: {out}")

        q = by_id(d)
        check(set(q) == {m0, m1}, f"m2 gone: {sorted(q)}")
        check(q[m0]["held"] and not q[m1]["held"], "m0 held, m1 released")

        # Idempotent and failing cases.
        rc, out, _ = cli("queue", "hold", m0.lower(), "-d", d.spool,
                         check_rc=0)
        check("already held" in out, f"hold twice: {out}")
        rc, out, _ = cli("queue", "release", m1, "-d", d.spool, check_rc=0)
        check("not held" in out, f"release an unheld message: {out}")
        rc, _, err = cli("queue", "delete", m2, "-d", d.spool, check_rc=1)
        check(f"{m2}: no such message" in err, f"deleted is gone: {err}")
        rc, _, err = cli("queue", "hold", "0000000000000001", m0, "-d",
                         d.spool, check_rc=1)
        check("0000000000000001: no such message" in err, "unknown id")
        rc, _, err = cli("queue", "hold", "xyz", "-d", d.spool, check_rc=2)
        check("not a queue id" in err, f"bad id is a usage error: {err}")
        cli("queue", "hold", "-d", d.spool, check_rc=2)
        cli("queue", "hold", "--all", m0, "-d", d.spool, check_rc=2)

        # Text list marks the held message like mailq: '!' after the id.
        rc, out, _ = cli("queue", "list", "-d", d.spool, check_rc=0)
        check(f"{m0}!" in out and f"{m1} " in out, f"list marks held: {out}")

        # The state survives the daemon's recovery (its repairing scan).
        d.start()
        check(d.stop() == 0, "restart and stop cleanly")
        q = by_id(d)
        check(set(q) == {m0, m1} and q[m0]["held"] and not q[m1]["held"],
              f"state after recovery: {q}")
        recovered = [l for l in d.read_log().splitlines()
                     if "event=recovered" in l]
        check(len(recovered) == 2 and
              all("torn_tails=0" in l for l in recovered),
              f"no record read as torn: {recovered}")
    finally:
        d.cleanup()


def test_summary():
    d, (m0, m1, m2) = stopped_daemon_with_three()
    try:
        cli("queue", "hold", m0, "-d", d.spool, check_rc=0)
        rc, out, _ = cli("queue", "summary", "--json", "-d", d.spool,
                         check_rc=0)
        s = json.loads(out)
        check(s["buckets"][0] == "5m" and s["buckets"][-1] == "1280m+" and
              len(s["buckets"]) == 10, f"buckets: {s['buckets']}")
        check(s["messages"] == 3 and s["held_messages"] == 1,
              f"messages: {s}")
        check(s["total"]["recipients"] == 4 and s["total"]["held"] == 2,
              f"total: {s['total']}")
        check(s["total"]["ages"][0] == 4, "all younger than 5 minutes")
        rows = [(r["domain"], r["recipients"], r["held"])
                for r in s["domains"]]
        check(rows == [("one.example", 2, 1), ("three.example", 1, 0),
                       ("two.example", 1, 1)],
              f"rows by count, then name, lower-cased: {rows}")
        check(s["other"]["domains"] == 0, "no other row")
        rc, out, _ = cli("queue", "summary", "-c", d.config_path,
                         check_rc=0)
        lines = out.splitlines()
        check(lines[0].split()[:2] == ["T", "5m"] and
              lines[0].split()[-2:] == ["1280m+", "held"],
              f"text header: {lines[0]}")
        check(lines[1].split()[:3] == ["TOTAL", "4", "4"],
              f"total row: {lines[1]}")
        check(lines[2].split()[0] == "one.example", f"first row: {lines[2]}")
        # Read-only: nothing was written by summary or list.
        before = sorted(os.listdir(os.path.join(d.spool, "seg")))
        cli("queue", "summary", "-d", d.spool, check_rc=0)
        cli("queue", "list", "-d", d.spool, check_rc=0)
        after = sorted(os.listdir(os.path.join(d.spool, "seg")))
        check(before == after, "read-only commands create no segment")
    finally:
        d.cleanup()


def test_no_daemon_and_busy_lock():
    d, (m0, m1, m2) = stopped_daemon_with_three()
    try:
        rc, out, err = cli("queue", "flush", "-d", d.spool, check_rc=1)
        check("postseald is not running; nothing to flush" in err,
              f"flush without a daemon: {err}")
        # Someone holds the lock but nothing answers on the socket: the
        # CLI must not write.
        with open(os.path.join(d.spool, "lock"), "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            rc, _, err = cli("queue", "hold", m0, "-d", d.spool, check_rc=1)
            check("does not answer" in err, f"busy lock: {err}")
            rc, _, err = cli("queue", "flush", "-d", d.spool, check_rc=1)
            check("does not answer" in err, f"flush, busy lock: {err}")
        check(not by_id(d)[m0]["held"], "nothing written under a busy lock")
        # A stale socket file (a crashed daemon) is no daemon.
        stale = os.path.join(d.spool, "control")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(stale)
        s.close()
        cli("queue", "hold", m0, "-d", d.spool, check_rc=0)
        check(by_id(d)[m0]["held"], "held through the offline path")
    finally:
        d.cleanup()


class FakeControl:
    """A scripted control server on a unix socket: records each request
    line and answers with reply(line) -> str."""

    def __init__(self, path, reply):
        self.path, self.reply, self.requests = path, reply, []
        if os.path.exists(path):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            with c:
                c.settimeout(10)
                line = c.makefile("rb").readline(8192).decode()
                self.requests.append(line)
                c.sendall(self.reply(line).encode())

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


def test_online_client():
    d, (m0, m1, m2) = stopped_daemon_with_three()
    words = {"HOLD": "held", "RELEASE": "released", "DELETE": "deleted",
             "FLUSH": "queued"}

    def reply(line):
        verb, *args = line.split()
        ids = [a for a in args if len(a) == 16]
        if ids and ids[0] == "0000000000000001":
            return "0000000000000001 not-found\nOK 1\n"
        if verb == "DELETE" and "--all" in args:
            return "ERR spool write failed: No space left on device\n"
        if verb == "FLUSH" and not ids:
            return f"{m0} queued\n{m1} active\nOK 2\n"
        return "".join(f"{q} {words[verb]}\n" for q in ids) + \
            f"OK {len(ids)}\n"

    fake = FakeControl(os.path.join(d.spool, "control"), reply)
    try:
        rc, out, _ = cli("queue", "hold", m0, m1, m0, "-d", d.spool,
                         check_rc=0)
        check(fake.requests[-1] == f"HOLD {m0} {m1}\n",
              f"one request, repeats dropped: {fake.requests[-1]!r}")
        check(out == f"postseal: {m0}: held\npostseal: {m1}: held\n",
              f"replies printed: {out!r}")
        check(not any(m["held"] for m in d.queue()),
              "the online path leaves the spool to the daemon")
        cli("queue", "hold", "0000000000000001", "-d", d.spool, check_rc=1)
        rc, _, err = cli("queue", "delete", "--all", "-d", d.spool,
                         check_rc=1)
        check("postseald: spool write failed" in err, f"ERR shown: {err}")
        rc, out, _ = cli("queue", "flush", "-d", d.spool, check_rc=0)
        check("being delivered" in out and
              "1 message queued for delivery" in out, f"flush: {out}")
        cli("queue", "flush", "--domain", "One.Example", "-d", d.spool,
            check_rc=0)
        check(fake.requests[-1] == "FLUSH --domain One.Example\n",
              f"flush --domain: {fake.requests[-1]!r}")
        # More ids than one line holds go in several requests.
        many = [f"{i:016X}" for i in range(0x100, 0x100 + 500)]
        n = len(fake.requests)
        rc, out, _ = cli("queue", "release", *many, "--socket",
                         fake.path, "-d", "/nonexistent", check_rc=0)
        sizes = [len(r.split()) - 1 for r in fake.requests[n:]]
        check(sizes == [240, 240, 20], f"batches: {sizes}")
        check(out.count("released") == 500, "every reply printed")
    finally:
        fake.stop()
        d.cleanup()


def test_daemon_honours_hold():
    """postseald takes the spool lock at start, skips held messages at
    recovery, and serves RELEASE on its control socket."""
    d, (m0, m1, m2) = stopped_daemon_with_three()
    sink = SmtpSink().start()
    try:
        cli("queue", "hold", m0, m1, "-d", d.spool, check_rc=0)
        cli("queue", "release", m1, "-d", d.spool, check_rc=0)
        cli("queue", "delete", m2, "-d", d.spool, check_rc=0)
        d.rewrite_config(extra=relay_config(sink.port, retry_initial=1))
        d.start()

        def delivered():
            with sink.lock:
                return [r for _, rcpts, _ in sink.messages for r in rcpts]

        check(wait_until(lambda: "c@one.example" in delivered(), 30),
              f"released m1 delivered: {delivered()}")
        time.sleep(3)  # several retry periods
        got = delivered()
        check("a@one.example" not in got, f"held m0 not delivered: {got}")
        check("d@three.example" not in got, f"deleted m2 never: {got}")
        q = by_id(d)
        check(set(q) == {m0} and q[m0]["held"], f"m0 still held: {q}")

        # While postseald runs the lock is taken: offline writes refused.
        with open(os.path.join(d.spool, "lock"), "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                raise AssertionError("postseald does not hold the spool lock")
            except BlockingIOError:
                pass

        # Online release: the daemon delivers it.
        rc, out, _ = cli("queue", "release", m0, "-c", d.config_path,
                         check_rc=0)
        check(f"{m0}: released" in out, f"release via the socket: {out}")
        check(wait_until(lambda: "a@one.example" in delivered(), 30),
              f"m0 delivered after release: {delivered()}")
        check(wait_until(lambda: d.queue() == [], 10), "queue empty")
        check(d.stop() == 0, "clean stop")
    finally:
        sink.stop()
        d.cleanup()


def test_online_daemon():
    """The running daemon applies hold, delete, flush and release from its
    control socket, durably (the state survives a restart)."""
    port = free_port()
    d = Daemon(extra=relay_config(port))  # next hop down, retry in 600 s
    d.start()
    sink = None
    try:
        m0, m1, m2 = queue_three(d)
        check(wait_until(lambda: d.read_log().count("event=deferred") >= 4,
                         10), "all three deferred once")
        rc, out, _ = cli("queue", "hold", m0, "-c", d.config_path,
                         check_rc=0)
        check(f"{m0}: held" in out, f"hold via the socket: {out}")
        check(by_id(d)[m0]["held"], "the HOLD record is in the spool")
        rc, out, _ = cli("queue", "delete", m1, "-c", d.config_path,
                         check_rc=0)
        check(f"{m1}: deleted" in out, f"delete via the socket: {out}")
        check(wait_until(lambda: m1 not in by_id(d), 5), "m1 gone")
        rc, _, err = cli("queue", "hold", "00000000000000AA", "-c",
                         d.config_path, check_rc=1)
        sink = SmtpSink(port=port).start()
        # The retry is 600 s away: only flush makes it go now.
        rc, out, _ = cli("queue", "flush", "-c", d.config_path, check_rc=0)

        def delivered():
            with sink.lock:
                return [r for _, rcpts, _ in sink.messages for r in rcpts]

        check(wait_until(lambda: "d@three.example" in delivered(), 15),
              f"m2 delivered after flush: {delivered()} {out}")
        time.sleep(1)
        check("a@one.example" not in delivered(), "held m0 not flushed")
        check("c@one.example" not in delivered(), "deleted m1 never sent")
        check(d.stop() == 0, "clean stop")
        d.start()  # the hold survives the restart
        time.sleep(1)
        check(by_id(d)[m0]["held"], "m0 still held after restart")
        check("a@one.example" not in delivered(), "held across restart")
        cli("queue", "release", m0, "-c", d.config_path, check_rc=0)
        check(wait_until(lambda: "a@one.example" in delivered(), 15),
              "released m0 delivered")
        check(wait_until(lambda: d.queue() == [], 10), "queue empty")
    finally:
        if sink is not None:
            sink.stop()
        d.cleanup()


if __name__ == "__main__":
    sys.exit(run_tests([test_offline_hold_release_delete,
                        test_summary,
                        test_no_daemon_and_busy_lock,
                        test_online_client,
                        test_daemon_honours_hold,
                        test_online_daemon]))
