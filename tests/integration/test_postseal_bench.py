"""postseal-bench: its sink and sender agree with each other, with the
real postseald, and with Postfix's smtp-sink.

- send -> sink on loopback, small counts: the sender's accepted messages,
  RCPT verdicts and sessions equal what the sink counted; the sink's
  configured 4xx/5xx share shows up in the sender's reply counts.
- send -> postseald: every message the sender saw accepted is in the spool
  (`postseal queue list --json`).
- send -> smtp-sink: a sanity check against a server we did not write.
- TLS: send --starttls / --tls (with --tls-resume) -> sink with a test
  certificate: both sides count the same handshakes, later connections
  resume; send --starttls -> postseald: every message accepted, and the
  daemon's inbound handshake metrics (full, resumed) match the sender's;
  a server without STARTTLS gets no plaintext fallback.
- AUTH: send --starttls --tls-resume --auth -> postseald's submission port
  (password file made with mkpasswd): every message accepted, one AUTH
  success per session in the daemon's metrics; a wrong password makes the
  sender give up (exit 1) with nothing accepted, every refusal counted on
  both sides; a server without AUTH PLAIN ends every session; the password
  never shows in the sender's output or the daemon's log.
- tls-handshake: the in-memory micro-benchmark runs and resumes.
The certificates come from a test CA made with /usr/bin/openssl at test
time (tlsutil.Pki). Every run is bounded in count and time; loopback only.
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
                     metric_value, run_tests, wait_port)
from tlsutil import OPENSSL, Pki, have_tools, mkpasswd  # noqa: E402

BENCH = os.path.join(BUILD, "postseal-bench")
TMP = tempfile.mkdtemp(prefix="postseal-bench-test-")


def send_proc(port, *args, want_rc=0, timeout=120):
    """Runs `postseal-bench send`; returns its JSON report and its
    stdout + stderr."""
    out = os.path.join(TMP, f"send-{time.monotonic_ns()}.json")
    cmd = [BENCH, "send", "--target", f"127.0.0.1:{port}", "--json", out,
           "--timeout", "10", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    check(r.returncode == want_rc and "runtime error" not in r.stderr and
          "Sanitizer" not in r.stderr,
          f"send exit {want_rc}, no sanitizer findings: {r.returncode} "
          f"{r.stderr[-2000:]}")
    print(r.stdout.strip().splitlines()[1])
    with open(out) as f:
        return json.load(f), r.stdout + r.stderr


def send(port, *args, timeout=120):
    """Runs `postseal-bench send` (exit 0); returns its JSON report."""
    return send_proc(port, *args, timeout=timeout)[0]


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
    check(e == {"connect": 0, "disconnect": 0, "timeout": 0, "protocol": 0,
                "tls": 0, "auth": 0},
          f"{what}: no errors: {e}")
    t, st = snd["tls"], snk["tls"]
    check((t["full"], t["resumed"]) == (st["full"], st["resumed"]) and
          t["failed"] == st["failed"] == 0,
          f"{what}: handshakes {t} match the sink's {st}")


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
                        for k in a["errors"]},
             "tls": {k: a["tls"][k] + b["tls"][k]
                     for k in ("full", "resumed", "failed")}}
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


PKI = None


def pki():
    """The test CA and one server certificate (made once)."""
    global PKI
    if PKI is None:
        PKI = Pki(os.path.join(TMP, "pki"))
        PKI.cert, PKI.key = PKI.leaf("sink", ["sink.bench.test"],
                                     ips=["127.0.0.1"])
    return PKI


def test_tls_send_to_sink():
    """STARTTLS and implicit TLS, with and without resumption: the
    sender's handshakes are the sink's, every message arrives."""
    p = pki()
    for mode, sink_args in (("--starttls", []), ("--tls", ["--tls"])):
        sink = Sink("--tls-cert", p.cert, "--tls-key", p.key, *sink_args)
        try:
            a = send(sink.port, mode, "--tls-resume", "--connections", "4",
                     "--count", "300", "--per-conn", "1", "--pipelining")
            b = send(sink.port, mode, "--connections", "3", "--count", "30",
                     "--per-conn", "10")
        finally:
            s = sink.stop()
        what = f"{mode} -> sink"
        check(a["messages"]["accepted"] == 300 and
              b["messages"]["accepted"] == 30, f"{what}: all accepted")
        ta, tb = a["tls"], b["tls"]
        want = {"--starttls": "starttls", "--tls": "implicit"}[mode]
        check(ta["mode"] == want, f"{what}: mode reported: {ta['mode']}")
        check(ta["handshakes"] == a["sessions"] == 300 and
              ta["full"] <= 4 and ta["resumed"] >= 296,
              f"{what}: one handshake per session, resumed after the "
              f"first per connection: {ta}")
        check(tb["handshakes"] == tb["full"] == b["sessions"] == 3,
              f"{what}: no --tls-resume, no resumption: {tb}")
        check(ta["version"] in ("TLSv1.2", "TLSv1.3") and
              a["latency_us"]["tls"]["count"] == 300,
              f"{what}: version and handshake latency: {ta}")
        total = {"messages": {"accepted": 330},
                 "rcpt_replies": {k: a["rcpt_replies"][k] +
                                  b["rcpt_replies"][k]
                                  for k in a["rcpt_replies"]},
                 "sessions": a["sessions"] + b["sessions"],
                 "bytes_sent": a["bytes_sent"] + b["bytes_sent"],
                 "errors": {k: a["errors"][k] + b["errors"][k]
                            for k in a["errors"]},
                 "tls": {k: ta[k] + tb[k]
                         for k in ("full", "resumed", "failed")}}
        agree(total, s, what)
        check(s["tls"]["mode"] == ta["mode"], f"{what}: sink mode {s['tls']}")


def test_starttls_not_offered():
    """A server without STARTTLS: every session ends, nothing is sent in
    clear."""
    sink = Sink()
    out = os.path.join(TMP, "send-no-starttls.json")
    try:
        start = time.monotonic()
        p = subprocess.run([BENCH, "send", "--target", f"127.0.0.1:{sink.port}",
                            "--starttls", "--connections", "20", "--count",
                            "10", "--per-conn", "1", "--json", out],
                           capture_output=True, text=True, timeout=60)
        wall = time.monotonic() - start
    finally:
        s = sink.stop()
    check(p.returncode == 1 and "STARTTLS" in p.stderr and wall < 30,
          f"the sender gives up, saying why: {p.returncode} {wall:.1f}s "
          f"{p.stderr[-500:]}")
    with open(out) as f:
        r = json.load(f)
    check(r["messages"]["accepted"] == 0 and s["messages"] == 0,
          f"no message without TLS: {r['messages']} sink {s['messages']}")
    check(r["errors"]["tls"] >= 100 and r["tls"]["handshakes"] == 0,
          f"counted as TLS errors: {r['errors']} {r['tls']}")


def tls_metrics(d):
    m = d.metrics()
    name = 'postseal_tls_handshakes_total{direction="inbound",result="%s"}'
    return {k: metric_value(m, name % k) for k in ("full", "resumed", "failed")}


def test_starttls_to_postseald():
    """send --starttls into postseald with a test certificate: every
    message accepted and spooled; the daemon counts the inbound handshakes
    the sender made, full, then resumed with --tls-resume."""
    p = pki()
    tls = f"tls:\n  cert_file: {p.cert}\n  key_file: {p.key}\n"
    with Daemon(tls) as d:
        m0 = tls_metrics(d)
        check(m0 == {"full": 0, "resumed": 0, "failed": 0},
              f"no handshakes yet: {m0}")
        a = send(d.smtp_port, "--starttls", "--connections", "4", "--count",
                 "60", "--per-conn", "1", "--to-domain", "remote.example")
        m1 = tls_metrics(d)
        b = send(d.smtp_port, "--starttls", "--tls-resume", "--connections",
                 "4", "--count", "120", "--per-conn", "1", "--pipelining",
                 "--to-domain", "remote.example")
        m2 = tls_metrics(d)
        for r in (a, b):
            check(r["messages"]["accepted"] == r["messages"]["attempted"] and
                  r["errors"]["tls"] == 0,
                  f"postseald accepted every message over TLS: "
                  f"{r['messages']} {r['errors']}")
        check(len(d.queue()) == 180, "the spool holds all 180")
        check(m1["full"] == a["tls"]["full"] == 60 and m1["resumed"] == 0,
              f"60 full inbound handshakes: daemon {m1}, sender {a['tls']}")
        full, resumed = m2["full"] - m1["full"], m2["resumed"] - m1["resumed"]
        check((full, resumed) == (b["tls"]["full"], b["tls"]["resumed"]),
              f"daemon counts what the sender made: {full} full, {resumed} "
              f"resumed; sender {b['tls']}")
        check(resumed >= 116 and full + resumed == 120 and m2["failed"] == 0,
              f"--tls-resume: all but the first per connection resumed: "
              f"{m2}")


AUTH_USER = "bench@example.org"
# A space and a colon: the user ends at the first colon, the rest is sent.
AUTH_PASSWORD = "bench pass:word 7"


def auth_metrics(d):
    m = d.metrics()
    name = 'postseal_auth_attempts_total{result="%s"}'
    return {k: metric_value(m, name % k) or 0
            for k in ("success", "failure", "blocked")}


def test_auth_to_postseald():
    """send --starttls --tls-resume --auth into postseald's submission
    port (TLS and AUTH required there): every message accepted, one AUTH
    per session, as the daemon counts them. Then a wrong password: the
    sender gives up (exit 1), nothing is accepted, and every refusal the
    sender counts is one the daemon counts (535 failures, then 454 once
    its failed-attempt limiter blocks the client)."""
    p = pki()
    passwd = os.path.join(TMP, "passwd")
    with open(passwd, "w") as f:
        f.write(f"{AUTH_USER}:{mkpasswd(AUTH_PASSWORD)}\n")
    conf = (f"tls:\n  cert_file: {p.cert}\n  key_file: {p.key}\n"
            f"auth:\n  passwd_file: {passwd}\n  max_failures: 32\n")
    with Daemon(conf) as d:
        m0 = auth_metrics(d)
        check(m0 == {"success": 0, "failure": 0, "blocked": 0},
              f"no AUTH yet: {m0}")
        r, text = send_proc(
            d.submission_port, "--starttls", "--tls-resume", "--auth",
            f"{AUTH_USER}:{AUTH_PASSWORD}", "--from", AUTH_USER,
            "--to-domain", "remote.example", "--connections", "4",
            "--count", "300", "--per-conn", "5", "--pipelining")
        m1 = auth_metrics(d)
        a = r["auth"]
        check(r["messages"]["accepted"] == r["messages"]["attempted"] == 300,
              f"postseald accepted every message: {r['messages']}")
        n = r["sessions"]  # 60, and a few that found the count reached
        check(60 <= n < 70 and a["ok"] == n and a["failed"] == 0 and
              a["mechanism"] == "PLAIN" and
              a["replies"] == {"2xx": n, "3xx": 0, "4xx": 0, "5xx": 0},
              f"one AUTH per session: {n} {a}")
        check(all(v == 0 for v in r["errors"].values()),
              f"no errors: {r['errors']}")
        check(r["latency_us"]["auth"]["count"] == n and
              r["latency_us"]["auth"]["p50"] > 0,
              f"AUTH latency recorded: {r['latency_us']['auth']}")
        check(r["tls"]["resumed"] >= n - 4, f"--tls-resume: {r['tls']}")
        check(m1 == {"success": n, "failure": 0, "blocked": 0},
              f"the daemon counts one success per session: {m1} "
              f"sessions {n}")
        check(len(d.queue()) == 300, "the spool holds all 300")
        check(AUTH_PASSWORD not in text and "word 7" not in text,
              "the sender never prints the password")

        start = time.monotonic()
        w, text = send_proc(
            d.submission_port, "--starttls", "--auth",
            f"{AUTH_USER}:wrong-password", "--from", AUTH_USER,
            "--to-domain", "remote.example", "--connections", "4",
            "--count", "50", want_rc=1)
        wall = time.monotonic() - start
        m2 = auth_metrics(d)
        fails, blocked = (m2["failure"] - m1["failure"],
                          m2["blocked"] - m1["blocked"])
        wa = w["auth"]
        check("AUTH PLAIN refused" in text and wall < 60,
              f"the sender gives up, saying why, in {wall:.1f}s: "
              f"{text[-600:]}")
        check(w["messages"]["accepted"] == 0 and len(d.queue()) == 300,
              f"no message accepted: {w['messages']}")
        check(w["errors"]["auth"] == wa["failed"] >= 100 and wa["ok"] == 0 and
              w["errors"]["tls"] == 0 and w["errors"]["protocol"] == 0,
              f"every session failed over AUTH: {w['errors']} {wa}")
        check(fails >= 1 and m2["success"] == m1["success"] and
              (fails, blocked) == (wa["replies"]["5xx"],
                                   wa["replies"]["4xx"]) and
              fails + blocked == wa["failed"],
              f"the daemon counts what the sender saw: failure {fails}, "
              f"blocked {blocked}; sender {wa}")
        check("wrong-password" not in text, "no password in the output")
        log = d.read_log()
        check(AUTH_PASSWORD not in log and "wrong-password" not in log,
              "no password in the daemon's log")


def test_auth_not_offered():
    """A server that offers no AUTH PLAIN: every session ends before MAIL,
    counted, and the sender gives up saying why."""
    sink = Sink()
    try:
        start = time.monotonic()
        r, text = send_proc(sink.port, "--auth", "u:sekrit-pw",
                            "--auth-insecure", "--connections", "20",
                            "--count", "10", want_rc=1, timeout=60)
        wall = time.monotonic() - start
    finally:
        s = sink.stop()
    check("no AUTH PLAIN" in text and wall < 30,
          f"the sender gives up, saying why: {wall:.1f}s {text[-500:]}")
    a = r["auth"]
    check(r["messages"]["accepted"] == 0 and s["messages"] == 0,
          f"no message without AUTH: {r['messages']} sink {s['messages']}")
    check(r["errors"]["auth"] == a["failed"] == a["not_offered"] >= 100 and
          a["insecure"] is True and a["ok"] == 0,
          f"counted as AUTH errors: {r['errors']} {a}")
    check("sekrit" not in text, "the password is not printed")


def test_tls_handshake_micro():
    """postseal-bench tls-handshake: full, then resumed, in memory."""
    out = {}
    for mode in ("full", "resume"):
        path = os.path.join(TMP, f"hs-{mode}.json")
        r = subprocess.run([BENCH, "tls-handshake", "--seconds", "0.3",
                            "--json", path] +
                           (["--resume"] if mode == "resume" else []),
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, f"tls-handshake {mode}: {r.stderr}")
        print(r.stdout.strip().splitlines()[1])
        with open(path) as f:
            out[mode] = json.load(f)
    f, s = out["full"], out["resume"]
    check(f["handshakes"] > 10 and f["resumed"] == 0 and
          f["server"]["per_core_s"] > 0 and f["client"]["per_core_s"] > 0,
          f"full handshakes, both sides timed: {f}")
    check(s["full"] == 1 and s["resumed"] == s["handshakes"] - 1,
          f"every handshake after the first resumed: {s}")
    if not os.path.exists(OPENSSL):
        return
    p = pki()
    r = subprocess.run([BENCH, "tls-handshake", "--seconds", "0.1", "--cert",
                        p.cert, "--key", p.key], capture_output=True,
                       text=True, timeout=60)
    check(r.returncode == 0 and "handshakes" in r.stdout,
          f"with a given certificate: {r.stdout} {r.stderr}")


def test_bounds():
    """--count or --duration is required; the caps hold; TLS options
    that cannot go together are refused."""
    for args in ([], ["--count", "20000000"], ["--duration", "7200"],
                 ["--count", "1", "--tls-resume"],
                 ["--count", "1", "--starttls", "--tls"]):
        r = subprocess.run([BENCH, "send", "--target", "127.0.0.1:1", *args],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 2, f"{args}: refused with usage: {r.returncode}")
    for args in (["--tls-cert", "/nonexistent"], ["--tls"]):
        r = subprocess.run([BENCH, "sink", "--listen", "127.0.0.1:1", *args],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 2, f"sink {args}: refused: {r.returncode}")
    r = subprocess.run([BENCH, "tls-handshake", "--seconds", "7200"],
                       capture_output=True, text=True, timeout=10)
    check(r.returncode == 2, f"tls-handshake over the cap: {r.returncode}")
    # AUTH: not in clear unless asked, USER:PASSWORD each non-empty, and a
    # refused value is never echoed.
    for args in (["--auth", "u:sekrit"], ["--starttls", "--auth", "sekrit"],
                 ["--tls", "--auth", ":sekrit"], ["--tls", "--auth", "u:"],
                 ["--tls", "--auth", "u:" + "sekrit" * 200],
                 ["--auth-insecure"]):
        r = subprocess.run([BENCH, "send", "--target", "127.0.0.1:1",
                            "--count", "1", *args],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 2 and "sekrit" not in r.stdout + r.stderr,
              f"{args}: refused with usage, value not echoed: "
              f"{r.returncode} {r.stderr[-300:]}")
    r = subprocess.run([BENCH, "send", "--help"], capture_output=True,
                       text=True, timeout=10)
    check("--auth USER:PASSWORD" in r.stdout and "--auth-insecure" in r.stdout,
          f"usage documents --auth: {r.stdout}")


if __name__ == "__main__":
    if not os.path.exists(BENCH):
        print(f"{BENCH} not built: skipped")
        sys.exit(SKIP)
    try:
        tests = [test_send_to_sink, test_sink_failures_show_in_send,
                 test_sink_delay_and_rate, test_send_to_postseald,
                 test_send_to_smtp_sink, test_starttls_not_offered,
                 test_tls_handshake_micro, test_bounds]
        tests[6:6] = [test_auth_not_offered]
        if os.path.exists(OPENSSL):
            tests[5:5] = [test_tls_send_to_sink, test_starttls_to_postseald]
        else:
            print(f"{OPENSSL} missing: TLS tests against certificates skipped")
        if have_tools():
            tests[-2:-2] = [test_auth_to_postseald]
        else:
            print("openssl or mkpasswd missing: AUTH test skipped")
        rc = run_tests(tests)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)
