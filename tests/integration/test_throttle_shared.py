"""Shared per-destination throttle (throttle.*): three postseald replicas
share one Redis and one limit for dest.test, RATE messages per PERIOD
across all of them; when Redis goes away they fall back to RATE / replicas
each, and when it returns they use it again.

The throttle's rule (core/daemon/throttle.c): at most RATE permits in any
half-open interval of PERIOD on Redis's clock, each permit used at once
(or dropped within 100 ms). The sink sees a message a little after its
permit (the SMTP exchange), and that delay varies, so the arrival check
uses a window of PERIOD - SLACK: a limit kept per replica (3 * RATE in a
window) or no limit at all fails it by far.

Needs redis-server (Debian package redis-server, scripts/setup.sh): the
test fails, not skips, without it. Every wait is bounded."""

import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, SmtpSink, check, free_port,  # noqa: E402
                     metric_value, run_tests, wait_until)

RATE = 20
PERIOD = 2.0  # seconds
SLACK = 0.3   # permit lifetime (0.1 s) + SMTP exchange jitter
REPLICAS = 3
SHARE = RATE // REPLICAS  # the fallback's limit per replica


class TimedSink(SmtpSink):
    """SmtpSink that also keeps each message's arrival time."""

    def __init__(self):
        super().__init__()
        self.times = []
        sink = self

        class Stamped(list):
            def append(self, item):
                sink.times.append(time.monotonic())
                super().append(item)

        self.messages = Stamped()

    def arrivals(self, since=0.0, until=None):
        with self.lock:
            return [t for t in self.times
                    if t >= since and (until is None or t < until)]


class Redis:
    """redis-server on a loopback port, no persistence, in a temp dir."""

    def __init__(self):
        self.exe = shutil.which("redis-server")
        check(self.exe is not None,
              "redis-server is installed (Debian package redis-server, "
              "scripts/setup.sh)")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="postseal-redis-")
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", self.dir],
            stdout=self.log, stderr=subprocess.STDOUT)
        check(wait_until(self.ping, 10, 0.05), "redis-server answers PING")
        return self

    def ping(self):
        import socket
        try:
            with socket.create_connection(("127.0.0.1", self.port),
                                          timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
            self.proc = None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def config(redis_port, sink_port):
    return ("relay_domains:\n  - dest.test\n"
            "transports:\n"
            f'  - "dest.test smtp:[127.0.0.1]:{sink_port}"\n'
            "delivery:\n  retry_initial: 1\n  retry_max: 2\n"
            "throttle:\n"
            f"  redis: 127.0.0.1:{redis_port}\n"
            "  rates:\n"
            f'    - "dest.test {RATE}/{int(PERIOD)}s"\n'
            f"  replicas: {REPLICAS}\n"
            "  timeout_ms: 200\n")


def inject(daemons, count, tag):
    """count messages, spread round-robin over the daemons, one SMTP
    session per daemon, sent in parallel."""
    errors = []

    def run(i, d):
        try:
            with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
                s.ehlo("client.test")
                for n in range(i, count, len(daemons)):
                    body = (f"From: s@client.test\r\nTo: r{n}@dest.test\r\n"
                            f"Subject: {tag}-{n}\r\n\r\nbody {n}\r\n")
                    s.sendmail("s@client.test", [f"r{n}@dest.test"], body)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, d))
               for i, d in enumerate(daemons)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    check(not errors, f"{tag}: every message accepted ({errors[:1]})")


def max_in_window(times, width):
    """The most arrivals in any half-open interval [t, t + width)."""
    times = sorted(times)
    best, j = 0, 0
    for i in range(len(times)):
        while times[i] - times[j] >= width:
            j += 1
        best = max(best, i - j + 1)
    return best


def metric_sum(daemons, name):
    return sum(metric_value(d.metrics(), name) or 0 for d in daemons)


def logged(daemons, event):
    return sum(d.read_log().count(f"event={event}") for d in daemons)


def test_shared_limit_fallback_and_return():
    redis = Redis()
    sink = TimedSink().start()
    daemons = []
    try:
        redis.start()
        for _ in range(REPLICAS):
            d = Daemon(extra=config(redis.port, sink.port), threads=2)
            daemons.append(d.start())
        check(wait_until(lambda: logged(daemons, "throttle_shared") >=
                         2 * REPLICAS, 10),
              "every worker reached Redis (throttle_shared)")

        # Phase 1: shared. 150 messages through three replicas.
        t0 = time.monotonic()
        inject(daemons, 150, "p1")
        ok = wait_until(lambda: sink.count() >= 150, 90, 0.1)
        p1 = sink.arrivals(t0)
        check(ok, f"phase 1: all 150 delivered (got {sink.count()})")
        span = max(p1) - min(p1)
        m_slack = max_in_window(p1, PERIOD - SLACK)
        m_strict = max_in_window(p1, PERIOD)
        print(f"phase 1: {len(p1)} messages in {span:.1f}s; max in any "
              f"{PERIOD - SLACK:.1f}s window {m_slack}, in any {PERIOD:.1f}s "
              f"window {m_strict} (limit {RATE})")
        check(m_slack <= RATE,
              f"phase 1: at most {RATE} per {PERIOD - SLACK}s window across "
              f"replicas (saw {m_slack})")
        check(span >= (150 / RATE - 1) * PERIOD - 1,
              f"phase 1: the limit spread 150 messages over >= "
              f"{(150 / RATE - 1) * PERIOD - 1:.0f}s (took {span:.1f}s)")
        check(metric_sum(daemons, "postseal_throttle_decisions_total"
                                  '{result="deferred"}') > 0,
              "phase 1: full windows were counted as deferred")
        check(metric_sum(daemons, "postseal_throttle_fallback") == 0,
              "phase 1: no fallback")

        # Phase 2: Redis goes away mid-run.
        n2 = 90
        base = sink.count()
        inject(daemons, n2, "p2")
        check(wait_until(lambda: sink.count() >= base + 10, 20, 0.05),
              "phase 2: delivery started")
        t_stop = time.monotonic()
        redis.stop()
        check(wait_until(lambda: logged(daemons, "throttle_fallback") >=
                         2 * REPLICAS, 10),
              "phase 2: every worker logged throttle_fallback")
        t_fb = time.monotonic()
        check(all(metric_value(d.metrics(), "postseal_throttle_fallback") == 1
                  for d in daemons), "phase 2: fallback gauge is 1")
        check(metric_sum(daemons, "postseal_throttle_redis_errors_total") > 0,
              "phase 2: Redis errors counted")
        got = sink.count()
        check(wait_until(lambda: sink.count() >= got + 2 * SHARE, 15, 0.1),
              "phase 2: delivery goes on without Redis")
        time.sleep(2 * PERIOD)
        t_restart = time.monotonic()
        local = sink.arrivals(t_fb + PERIOD, t_restart)
        m_local = max_in_window(local, PERIOD - SLACK)
        print(f"phase 2: Redis stopped; fallback logged after "
              f"{t_fb - t_stop:.2f}s; {len(local)} messages in "
              f"{t_restart - t_fb - PERIOD:.1f}s of fallback, max in any "
              f"{PERIOD - SLACK:.1f}s window {m_local} (local limit "
              f"{REPLICAS} x {SHARE} = {REPLICAS * SHARE})")
        check(m_local <= REPLICAS * SHARE,
              f"phase 2: each replica keeps its share ({m_local} > "
              f"{REPLICAS * SHARE})")
        check(len(local) > 0, "phase 2: deliveries during the fallback")

        # Phase 3: Redis returns (empty: no persistence).
        redis.start()
        check(wait_until(lambda: logged(daemons, "throttle_shared") >=
                         4 * REPLICAS, 15),
              "phase 3: every worker logged throttle_shared again")
        t_back = time.monotonic()
        print(f"phase 3: Redis back; shared again after "
              f"{t_back - t_restart:.2f}s")
        check(all(metric_value(d.metrics(), "postseal_throttle_fallback") == 0
                  for d in daemons), "phase 3: fallback gauge back to 0")
        check(wait_until(lambda: sink.count() >= base + n2, 60, 0.1),
              f"phase 2: all {n2} delivered")
        base = sink.count()
        t3 = time.monotonic()
        inject(daemons, 60, "p3")
        check(wait_until(lambda: sink.count() >= base + 60, 60, 0.1),
              "phase 3: all 60 delivered")
        p3 = sink.arrivals(t3)
        m3 = max_in_window(p3, PERIOD - SLACK)
        print(f"phase 3: {len(p3)} messages in {max(p3) - min(p3):.1f}s, "
              f"max in any {PERIOD - SLACK:.1f}s window {m3}, in any "
              f"{PERIOD:.1f}s window {max_in_window(p3, PERIOD)}")
        check(m3 <= RATE, f"phase 3: shared limit again ({m3} > {RATE})")
        total = sink.count()
        print(f"total delivered {total} of {150 + n2 + 60}")
        check(total == 150 + n2 + 60, "every message delivered exactly once")
        for d in daemons:
            check("event=bounced" not in d.read_log(), "nothing bounced")
            check(wait_until(lambda: len(d.queue()) == 0, 10),
                  "queues empty")
        for d in daemons:
            rc = d.stop()
            check(rc == 0, f"postseald exited 0 (got {rc})")
            check(not d.sanitizer_reports(),
                  f"no sanitizer reports: {d.sanitizer_reports()}")
    except Exception:
        for d in daemons:
            d.dump_log(20)
        raise
    finally:
        for d in daemons:
            d.cleanup()
        sink.stop()
        redis.cleanup()


if __name__ == "__main__":
    sys.exit(run_tests([test_shared_limit_fallback_and_return]))
