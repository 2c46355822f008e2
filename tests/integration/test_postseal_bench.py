"""postseal-bench: its sink and sender agree with each other, with the
real postseald, and with Postfix's smtp-sink.

- send -> sink on loopback, small counts: the sender's accepted messages,
  RCPT verdicts and sessions equal what the sink counted; the sink's
  configured 4xx/5xx share shows up in the sender's reply counts.
- send -> postseald: every message the sender saw accepted is in the spool
  (`postseal queue list --json`).
- send -> smtp-sink: a sanity check against a server we did not write.
Every run is bounded in count and time; loopback only.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (BUILD, SKIP, Daemon, check, free_port,  # noqa: E402
                     run_tests, wait_port)

BENCH = os.path.join(BUILD, "postseal-bench")
TMP = tempfile.mkdtemp(prefix="postseal-bench-test-")


def send(port, *args, timeout=120):
    """Runs `postseal-bench send`; returns its JSON report."""
    out = os.path.join(TMP, f"send-{time.monotonic_ns()}.json")
    cmd = [BENCH, "send", "--target", f"127.0.0.1:{port}", "--json", out,
           "--timeout", "10", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    check(r.returncode == 0 and "runtime error" not in r.stderr,
          f"send exit 0, no sanitizer findings: {r.returncode} "
          f"{r.stderr[-2000:]}")
    print(r.stdout.strip().splitlines()[1])
    with open(out) as f:
        return json.load(f)


class Sink:
    """One `postseal-bench sink` process; stop() returns its report."""

    def __init__(self, *args):
        self.port = free_port(reserve=True)
        self.report = os.path.join(TMP, f"sink-{self.port}.json")
        self.proc = subprocess.Popen(
            [BENCH, "sink", "--listen", f"127.0.0.1:{self.port}", "--report",
             self.report, "--duration", "300", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()  # "listening on": bound already
        check("listening" in line, f"sink started: {line!r}")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=30)
        check(self.proc.returncode == 0,
              f"sink exit 0: {self.proc.returncode} {err[-2000:]}")
        check("runtime error" not in err and "Sanitizer" not in err,
              f"sink sanitizer findings: {err[-2000:]}")
        with open(self.report) as f:
            return json.load(f)


def agree(snd, snk, what):
    m = snd["messages"]
    check(m["accepted"] == snk["messages"],
          f"{what}: accepted {m['accepted']} == sink messages "
          f"{snk['messages']}")
    r = snd["rcpt_replies"]
    rc = snk["recipients"]
    check((r["2xx"], r["4xx"], r["5xx"]) ==
          (rc["accepted"], rc["tempfailed"], rc["permfailed"]),
          f"{what}: RCPT replies {r} match sink recipients {rc}")
    check(snd["sessions"] == snk["sessions"],
          f"{what}: sessions {snd['sessions']} == {snk['sessions']}")
    check(snd["bytes_sent"] == snk["bytes"],
          f"{what}: bytes {snd['bytes_sent']} == {snk['bytes']}")
    e = snd["errors"]
    check(e == {"connect": 0, "disconnect": 0, "timeout": 0, "protocol": 0},
          f"{what}: no errors: {e}")


def test_send_to_sink():
    sink = Sink()
    try:
        a = send(sink.port, "--connections", "8", "--count", "2000")
        b = send(sink.port, "--connections", "4", "--count", "300",
                 "--per-conn", "1", "--pipelining", "--size-dist",
                 "1024:50,4096:40,65536:10")
    finally:
        s = sink.stop()
    check(a["messages"]["attempted"] == 2000 and
          a["messages"]["accepted"] == 2000, f"all 2000 accepted: {a}")
    check(b["sessions"] == 300, f"one session per message: {b['sessions']}")
    total = {"messages": {"accepted": a["messages"]["accepted"] +
                          b["messages"]["accepted"]},
             "rcpt_replies": {k: a["rcpt_replies"][k] + b["rcpt_replies"][k]
                              for k in a["rcpt_replies"]},
             "sessions": a["sessions"] + b["sessions"],
             "bytes_sent": a["bytes_sent"] + b["bytes_sent"],
             "errors": {k: a["errors"][k] + b["errors"][k]
                        for k in a["errors"]}}
    agree(total, s, "send -> sink")
    for run in (a, b):
        lat = run["latency_us"]
        check(lat["data"]["count"] == run["messages"]["accepted"] and
              lat["ehlo"]["count"] == run["sessions"] and
              0 < lat["data"]["p50"] <= lat["data"]["p99"] <= lat["data"]["max"],
              f"latency histograms filled: {lat}")


def test_sink_failures_show_in_send():
    sink = Sink("--tempfail", "20", "--permfail", "10", "--seed", "7")
    try:
        r = send(sink.port, "--connections", "6", "--count", "1500",
                 "--rcpts", "2", "--pipelining")
    finally:
        s = sink.stop()
    agree(r, s, "tempfail/permfail")
    rc = r["rcpt_replies"]
    total = rc["2xx"] + rc["4xx"] + rc["5xx"]
    check(total == 3000, f"two RCPT replies per message: {rc}")
    check(0.15 < rc["4xx"] / total < 0.25 and 0.06 < rc["5xx"] / total < 0.14,
          f"about 20 % 4xx and 10 % 5xx: {rc}")
    m = r["messages"]
    check(m["accepted"] + m["tempfailed"] + m["permfailed"] == 1500,
          f"every message has an outcome: {m}")
    check(m["tempfailed"] > 0 and m["permfailed"] > 0,
          f"some messages lost every recipient: {m}")
    check(r["replies"]["4xx"] >= rc["4xx"] and r["replies"]["5xx"] >= rc["5xx"],
          f"reply classes include RCPT's: {r['replies']}")


def test_sink_delay_and_rate():
    """--delay-ms holds each 250; --rate paces the sender (open loop) and
    its message latency counts from the schedule."""
    sink = Sink("--delay-ms", "30")
    try:
        start = time.monotonic()
        r = send(sink.port, "--connections", "4", "--count", "100",
                 "--rate", "100")
        wall = time.monotonic() - start
    finally:
        s = sink.stop()
    agree(r, s, "delay")
    check(r["mode"] == "open" and 0.8 <= wall < 10,
          f"100 messages at 100/s take about a second: {wall:.2f}s")
    check(r["latency_us"]["data"]["p50"] >= 30000,
          f"the sink's 30 ms delay shows: {r['latency_us']['data']}")


def test_send_to_postseald():
    with Daemon() as d:
        before = len(d.queue())
        r = send(d.smtp_port, "--connections", "10", "--count", "500",
                 "--rcpts", "2", "--pipelining", "--to-domain",
                 "remote.example")
        accepted = r["messages"]["accepted"]
        check(accepted == 500, f"postseald accepted all: {r['messages']}")
        q = d.queue()
        check(len(q) - before == accepted,
              f"spool holds every accepted message: {len(q) - before} "
              f"!= {accepted}")
        sample = json.dumps(q[0])
        check("remote.example" in sample, f"recipients in the spool: {sample}")


def test_send_to_smtp_sink():
    check(shutil.which("smtp-sink") or os.path.exists("/usr/sbin/smtp-sink"),
          "smtp-sink installed (setup.sh)")
    port = free_port()
    cmd = ["smtp-sink", "127.0.0.1:%d" % port, "100"]
    if os.geteuid() == 0:
        cmd[1:1] = ["-u", "nobody"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    try:
        check(wait_port(port), "smtp-sink listening")
        r = send(port, "--connections", "10", "--count", "1000",
                 "--pipelining")
    finally:
        p.terminate()
        p.wait(timeout=10)
    check(r["messages"]["accepted"] == 1000, f"smtp-sink took all: {r}")
    check(r["errors"]["protocol"] == 0 and r["errors"]["timeout"] == 0,
          f"no errors: {r['errors']}")


def test_bounds():
    """--count or --duration is required; the caps hold."""
    for args in ([], ["--count", "20000000"], ["--duration", "7200"]):
        r = subprocess.run([BENCH, "send", "--target", "127.0.0.1:1", *args],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 2, f"{args}: refused with usage: {r.returncode}")


if __name__ == "__main__":
    if not os.path.exists(BENCH):
        print(f"{BENCH} not built: skipped")
        sys.exit(SKIP)
    try:
        rc = run_tests([test_send_to_sink, test_sink_failures_show_in_send,
                        test_sink_delay_and_rate, test_send_to_postseald,
                        test_send_to_smtp_sink, test_bounds])
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)
