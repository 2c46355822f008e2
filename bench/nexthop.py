#!/usr/bin/python3
"""End to end into a real final hop: smtp-source -> postseald -> Postfix 3.7
(its own Maildir) or Dovecot (LMTP into a Maildir), counting what the final
hop stored. Uses the integration-test harnesses (tests/integration), so the
servers run in temp dirs on loopback and are stopped afterwards; every wait
is bounded.

  bench/nexthop.py postfix [-n 20000] [--size 1024] [--sessions 50]
  bench/nexthop.py dovecot [-n 20000] [--size 1024] [--sessions 50]

POSTSEAL_BUILD selects the build tree (default build/). Prints one line:
stored N of N, the end-to-end rate, and what is left in postseald's queue.
Exit status 0 only if everything arrived and the queue drained."""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("POSTSEAL_BUILD", os.path.join(HERE, "..", "build"))
from harness import Daemon, wait_until  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hop", choices=("postfix", "dovecot"))
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--timeout", type=int, default=1200)
    a = ap.parse_args()
    if a.hop == "postfix":
        from postfix import Postfix
        server = Postfix(users=("alice",), domain="pfx.test")
        rcpt = "alice@pfx.test"
    else:
        from dovecot import Dovecot
        server = Dovecot()
        rcpt = "bob@lmtp.test"
    with server as hop:
        if a.hop == "postfix":
            extra = f'relayhost: "[127.0.0.1]:{hop.port}"\n'
            stored = lambda: len(hop.maildir_messages("alice"))  # noqa: E731
        else:
            extra = f'transports:\n  - "lmtp.test lmtp:127.0.0.1:{hop.port}"\n'
            new = os.path.join(hop.maildir("bob", "lmtp.test"), "new")
            stored = lambda: (len(os.listdir(new))  # noqa: E731
                              if os.path.isdir(new) else 0)
        with Daemon(extra=extra, threads=2) as d:
            t0 = time.monotonic()
            subprocess.run(["/usr/sbin/smtp-source", "-s", str(a.sessions),
                            "-m", str(a.n), "-l", str(a.size),
                            "-f", "a@example.org", "-t", rcpt,
                            f"127.0.0.1:{d.smtp_port}"],
                           check=True, timeout=a.timeout)
            wait_until(lambda: stored() >= a.n, a.timeout, step=1.0)
            t1 = time.monotonic()
            n, left = stored(), len(d.queue())
            print(f"{a.hop}: stored {n} of {a.n} ({a.size} B, "
                  f"{a.sessions} sessions) in {t1 - t0:.1f} s = "
                  f"{a.n / (t1 - t0):.0f} msg/s end to end; "
                  f"postseald queue left: {left}")
            return 0 if n == a.n and left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
