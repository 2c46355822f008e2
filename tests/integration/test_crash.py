"""Crash consistency: kill -9 postseald repeatedly while clients submit,
restart it on the same spool, and check that every message that got a 250
is present exactly once after recovery. Bounded: a fixed number of kills,
each client stops at a deadline."""

import os
import random
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Daemon, check, run_tests  # noqa: E402

KILLS = 6
CLIENTS = 8


class Client(threading.Thread):
    """Submits messages with a unique sender token each until told to stop;
    records tokens acknowledged with 250 and the queue id given."""

    def __init__(self, port, index, stop, acked, lock):
        super().__init__(daemon=True)
        self.port, self.index, self.stop = port, index, stop
        self.acked, self.lock = acked, lock
        self.seq = 0

    def session(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        f = s.makefile("rb")

        def reply():
            while True:
                line = f.readline()
                if not line:
                    raise EOFError
                if line[3:4] != b"-":
                    return line

        reply()
        s.sendall(b"EHLO crash.test\r\n")
        reply()
        while not self.stop.is_set():
            self.seq += 1
            token = f"c{self.index}-{self.seq}"
            s.sendall(f"MAIL FROM:<{token}@crash.test>\r\n"
                      "RCPT TO:<sink@example.net>\r\nDATA\r\n".encode())
            for _ in range(3):
                line = reply()
            if not line.startswith(b"354"):
                raise EOFError
            s.sendall(f"Subject: {token}\r\n\r\n".encode() +
                      (b"x" * 76 + b"\r\n") * 26 + b".\r\n")
            line = reply()
            m = re.match(rb"250 .*queued as ([0-9A-F]{16})", line)
            if m:
                with self.lock:
                    self.acked[token] = m.group(1).decode()
        s.close()

    def run(self):
        while not self.stop.is_set():
            try:
                self.session()
            except (OSError, EOFError):
                time.sleep(0.02)  # daemon down: retry until it is back


def test_kill9_during_load():
    d = Daemon(threads=2)
    try:
        d.start()
        stop = threading.Event()
        acked, lock = {}, threading.Lock()
        clients = [Client(d.smtp_port, i, stop, acked, lock)
                   for i in range(CLIENTS)]
        for c in clients:
            c.start()
        rng = random.Random(5321)
        for k in range(KILLS):
            time.sleep(rng.uniform(0.4, 1.2))
            d.kill9()
            d.start(wait=False)
            check(d.wait_ready(), f"restart {k} is ready")
        time.sleep(0.5)
        stop.set()
        for c in clients:
            c.join(timeout=20)
        check(d.stop() == 0, "clean stop at the end")
        with lock:
            acked = dict(acked)
        check(len(acked) > 200, f"load went through: {len(acked)} acked")
        queue = d.queue()
        seen = {}
        for e in queue:
            token = e["sender"].split("@")[0]
            seen.setdefault(token, []).append(e["queue_id"])
        missing = [t for t in acked if t not in seen]
        dupes = [t for t, ids in seen.items() if len(ids) > 1]
        wrong = [t for t in acked if t in seen and seen[t] != [acked[t]]]
        check(not missing, f"acknowledged but lost: {missing[:10]}")
        check(not dupes, f"present more than once: {dupes[:10]}")
        check(not wrong, f"queue id differs from the 250 reply: {wrong[:10]}")
        log = d.read_log()
        recoveries = re.findall(r"event=recovered .*messages=(\d+)", log)
        check(len(recoveries) == KILLS + 1, f"recovered at each start: "
              f"{recoveries}")
        print(f"acked={len(acked)} in_spool={len(queue)} kills={KILLS} "
              f"torn_tails={log.count('torn_tails=1')}")
    finally:
        d.cleanup()


if __name__ == "__main__":
    sys.exit(run_tests([test_kill9_during_load]))
