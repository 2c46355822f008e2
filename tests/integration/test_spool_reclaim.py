"""Segments are deleted while postseald runs, as soon as every message in
them is finished, and never in a way that loses a queued message or makes
a delivered one come back after a crash. Small segments (64 KiB) make a
few hundred messages span many of them. Loopback only; bounded waits."""

import os
import re
import smtplib
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, SmtpSink, check, free_port,  # noqa: E402
                     metric_value, run_tests, wait_until)


def config(sink_port, dead_port):
    return ("spool_segment_size: 64K\n"
            f'relayhost: "[127.0.0.1]:{sink_port}"\n'
            "transports:\n"
            f'  - "dead.test smtp:[127.0.0.1]:{dead_port}"\n'
            "delivery:\n  retry_initial: 600\n  retry_max: 600\n"
            "  connect_timeout: 2\n")


def segments(d):
    return sorted(os.listdir(os.path.join(d.spool, "seg")))


def send(d, n, tag, rcpt="r@example.net"):
    body = ("x" * 70 + "\r\n") * 21  # about 1.5 KiB, short lines
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        for i in range(n):
            s.sendmail("s@example.org", [rcpt],
                       f"Subject: {tag} {i}\r\n\r\n{body}\r\n")


def delivered(sink):
    with sink.lock:
        return len(sink.messages)


def test_finished_segments_go_while_running():
    sink = SmtpSink().start()
    try:
        with Daemon(extra=config(sink.port, free_port()), threads=2) as d:
            for _ in range(4):
                send(d, 100, "bulk")
            check(wait_until(lambda: delivered(sink) == 400, 30),
                  f"all 400 delivered: {delivered(sink)}")
            check(wait_until(lambda: d.queue() == [], 10), "queue empty")
            # The last DONEs sit in each worker's current segment; every
            # older one is finished and goes.
            ok = wait_until(lambda: len(segments(d)) <= 4, 10)
            text = d.metrics()
            n = metric_value(text, "postseal_spool_segments_reclaimed_total")
            check(ok, f"at most 2 segments per worker left: {segments(d)}")
            check(n and n >= 5, f"segments reclaimed while running: {n}")
            check(re.search(r"event=segment_reclaimed ", d.read_log()),
                  "logged")
    finally:
        sink.stop()


def test_reclaim_keeps_what_is_needed_across_a_crash():
    sink = SmtpSink().start()
    dead = free_port()
    try:
        d = Daemon(extra=config(sink.port, dead), threads=1)
        d.start()
        try:
            for _ in range(2):
                send(d, 100, "bulk")
            check(wait_until(lambda: delivered(sink) == 200, 30),
                  "200 delivered")
            send(d, 1, "waiting", rcpt="w@dead.test")  # stays deferred
            send(d, 100, "bulk")
            check(wait_until(lambda: delivered(sink) == 300, 30),
                  "300 delivered")
            check(wait_until(lambda: len(d.queue()) == 1, 10),
                  "only the deferred one left")
            n = metric_value(d.metrics(),
                             "postseal_spool_segments_reclaimed_total")
            check(n and n >= 1, f"segments before it were reclaimed: {n}")
            d.kill9()
            d.start()
            check(len(d.queue()) == 1 and
                  d.queue()[0]["recipients"] == ["w@dead.test"],
                  f"after kill -9: the deferred one, nothing else: "
                  f"{d.queue()}")
            time.sleep(2)
            check(delivered(sink) == 300,
                  f"nothing delivered again after the crash: "
                  f"{delivered(sink)}")
            check(d.stop() == 0, "clean stop")
        finally:
            d.cleanup()
    finally:
        sink.stop()


def test_reclaim_behind_a_recovered_message():
    """The delivered ones are deleted around a message that stays queued:
    once the old segment is kept at restart, the new ones still go."""
    sink = SmtpSink().start()
    dead = free_port()
    try:
        d = Daemon(extra=config(sink.port, dead), threads=1)
        d.start()
        try:
            send(d, 1, "waiting", rcpt="w@dead.test")
            check(d.stop() == 0, "stopped with one queued")
            d.start()  # the waiting one is now a recovered message
            for _ in range(3):
                send(d, 100, "bulk")
            check(wait_until(lambda: delivered(sink) == 300, 30),
                  "300 delivered")
            ok = wait_until(lambda: (metric_value(
                d.metrics(), "postseal_spool_segments_reclaimed_total")
                or 0) >= 3, 10)
            check(ok, "this run's finished segments go although an older "
                      "message is still queued")
            d.kill9()
            d.start()
            check([m["recipients"] for m in d.queue()] == [["w@dead.test"]],
                  f"the recovered message survives: {d.queue()}")
            time.sleep(2)
            check(delivered(sink) == 300, "nothing delivered twice")
            check(d.stop() == 0, "clean stop")
        finally:
            d.cleanup()
    finally:
        sink.stop()


def test_recovered_segments_go_once_delivered():
    """A backlog left by a crash is recovered and delivered; the segments
    the earlier run wrote are then deleted while the daemon runs, with no
    further restart, and a crash after that delivers nothing again."""
    sink = SmtpSink()  # not listening yet: the first run cannot deliver
    try:
        d = Daemon(extra=config(sink.port, free_port()), threads=2)
        d.start()
        try:
            for _ in range(3):
                send(d, 100, "backlog")
            check(wait_until(lambda: len(d.queue()) == 300, 10),
                  f"300 queued, next hop down: {len(d.queue())}")
            d.kill9()
            old = set(segments(d))
            check(len(old) >= 4, f"the backlog spans segments: {old}")
            sink.start()
            d.start()
            check(wait_until(lambda: delivered(sink) == 300, 60),
                  f"the recovered 300 delivered: {delivered(sink)}")
            check(wait_until(lambda: d.queue() == [], 10), "queue empty")
            ok = wait_until(lambda: not old & set(segments(d)), 10)
            check(ok, f"the old segments went while running: "
                      f"{sorted(old & set(segments(d)))} of {sorted(old)} "
                      f"left")
            n = metric_value(d.metrics(),
                             "postseal_spool_segments_reclaimed_total")
            check(n and n >= len(old), f"counted: {n} >= {len(old)}")
            check(len(re.findall(r"event=segment_reclaimed .*recovered=yes",
                                 d.read_log())) >= len(old),
                  "logged as recovered segments")
            d.kill9()
            d.start()
            check(d.queue() == [], f"nothing queued after kill -9: "
                                   f"{d.queue()[:3]}")
            time.sleep(2)
            check(delivered(sink) == 300,
                  f"nothing delivered again: {delivered(sink)}")
            check(d.stop() == 0, "clean stop")
        finally:
            d.cleanup()
    finally:
        sink.stop()


def test_recovered_group_with_a_waiting_message_stays():
    """Recovered segments whose messages all finish go; the one holding a
    recovered message that still waits stays, and keeps that message
    across a crash."""
    sink = SmtpSink()
    dead = free_port()
    try:
        d = Daemon(extra=config(sink.port, dead), threads=1)
        d.start()
        try:
            send(d, 100, "backlog")
            send(d, 1, "waiting", rcpt="w@dead.test")
            send(d, 100, "backlog")
            check(wait_until(lambda: len(d.queue()) == 201, 10),
                  f"201 queued: {len(d.queue())}")
            d.kill9()
            old = set(segments(d))
            sink.start()
            d.start()
            check(wait_until(lambda: delivered(sink) == 200, 60),
                  f"200 delivered: {delivered(sink)}")
            check(wait_until(lambda: len(old - set(segments(d))) >= 1, 10),
                  f"finished old segments went: {sorted(old)} -> "
                  f"{segments(d)}")
            check(old & set(segments(d)), "the waiting one's group stays")
            d.kill9()
            d.start()
            check([m["recipients"] for m in d.queue()] == [["w@dead.test"]],
                  f"the waiting message survives: {d.queue()}")
            time.sleep(2)
            check(delivered(sink) == 200, "nothing delivered twice")
            check(d.stop() == 0, "clean stop")
        finally:
            d.cleanup()
    finally:
        sink.stop()


if __name__ == "__main__":
    run_tests([test_finished_segments_go_while_running,
               test_reclaim_keeps_what_is_needed_across_a_crash,
               test_reclaim_behind_a_recovered_message,
               test_recovered_segments_go_once_delivered,
               test_recovered_group_with_a_waiting_message_stays])
