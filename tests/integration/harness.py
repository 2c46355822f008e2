"""Integration-test harness: runs the real postseald on loopback.

Each test script imports this module, starts a daemon with a temporary
spool and a configuration written for the test, talks to it with real
clients (smtplib, swaks, smtp-source), and stops it. Ports are picked
free per daemon. Nothing here leaves the machine: listeners and clients
use 127.0.0.1 only, and every loop is bounded in count and time.

Run by ctest with POSTSEAL_BUILD (the build tree) in the environment; a
test returns 77 when a facility it needs is missing (ctest reports a skip).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("POSTSEAL_BUILD") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "build")
SOURCE = os.environ.get("POSTSEAL_SOURCE") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..")
POSTSEALD = os.path.join(BUILD, "postseald")
POSTSEAL = os.path.join(BUILD, "postseal")
SKIP = 77


def _sanitized():
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            return "POSTSEAL_SANITIZE:BOOL=ON" in f.read()
    except OSError:
        return False


# ASan keeps freed memory in quarantine: memory bounds need more slack.
SANITIZED = _sanitized()


def free_port():
    """A port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Daemon:
    """One postseald process with its own spool and configuration.

    extra: YAML text appended to the generated configuration (top-level
    keys not already written here, e.g. local_domains or limits).
    """

    def __init__(self, extra="", threads=2, spool_dir=None, mynetworks=None,
                 env=None):
        self.tmp = tempfile.mkdtemp(prefix="postseal-test-")
        self.spool = spool_dir or os.path.join(self.tmp, "spool")
        self.smtp_port = free_port()
        self.submission_port = free_port()
        self.metrics_port = free_port()
        self.threads = threads
        self.config_path = os.path.join(self.tmp, "postseald.yaml")
        nets = mynetworks if mynetworks is not None else ["127.0.0.0/8"]
        self.config_text = (
            "hostname: mx.test.example\n"
            f"threads: {threads}\n"
            "listen:\n"
            f"  smtp: 127.0.0.1:{self.smtp_port}\n"
            f"  submission: 127.0.0.1:{self.submission_port}\n"
            f"  metrics: 127.0.0.1:{self.metrics_port}\n"
            f"spool_dir: {self.spool}\n"
            "mynetworks:\n" + "".join(f"  - {n}\n" for n in nets) + extra)
        with open(self.config_path, "w") as f:
            f.write(self.config_text)
        self.env = dict(os.environ)
        for k in list(self.env):
            if k.startswith("POSTSEAL_") and k not in ("POSTSEAL_BUILD",
                                                       "POSTSEAL_SOURCE"):
                del self.env[k]
        self.env.update(env or {})
        self.proc = None
        self.log_path = os.path.join(self.tmp, "postseald.log")
        self.ready_seen = 0
        self.last_rc = None

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [POSTSEALD, "-c", self.config_path], stdout=self.log,
            stderr=subprocess.STDOUT, env=self.env)
        if wait and not self.wait_ready():
            self.dump_log()
            raise RuntimeError("postseald did not start listening")
        return self

    def wait_ready(self, timeout=15.0):
        """Waits for this start's "postseald ready" log line (a probe
        connection would count as an SMTP session in the metrics)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.read_log().count("postseald ready")
            if seen > self.ready_seen:
                self.ready_seen = seen
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def rewrite_config(self, extra="", mynetworks=None):
        """Writes a new configuration with the same listeners (for SIGHUP)."""
        nets = mynetworks if mynetworks is not None else ["127.0.0.0/8"]
        text = self.config_text.split("mynetworks:\n")[0]
        text += "mynetworks:\n" + "".join(f"  - {n}\n" for n in nets) + extra
        with open(self.config_path, "w") as f:
            f.write(text)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        """SIGTERM and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
            self.dump_log()
            raise RuntimeError("postseald did not stop on SIGTERM")
        self.log.close()
        self.proc = None
        self.last_rc = rc
        return rc

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.proc = None

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def dump_log(self, tail=60):
        lines = self.read_log().splitlines()
        sys.stderr.write("---- postseald log (tail) ----\n")
        sys.stderr.write("\n".join(lines[-tail:]) + "\n")

    def cleanup(self):
        if self.proc is not None:
            try:
                self.stop()
            except RuntimeError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def queue(self):
        """`postseal queue list --json` as a list of dicts."""
        out = subprocess.run([POSTSEAL, "queue", "list", "--json", "-d",
                              self.spool], check=True, capture_output=True,
                             text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_cat(self, qid):
        return subprocess.run([POSTSEAL, "queue", "cat", qid, "-d", self.spool],
                              check=True, capture_output=True).stdout

    def metrics(self):
        import urllib.request
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def __enter__(self):
        return self.start()

    def sanitizer_reports(self):
        """ASan/UBSan/LSan findings in the daemon's output (the sanitizer
        build runs every integration test)."""
        log = self.read_log()
        marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                 "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")
        return [m for m in marks if m in log]

    def __exit__(self, *exc):
        if exc[0] is not None and self.proc is not None:
            self.dump_log()
        if self.proc is not None:
            try:
                self.stop()
            except RuntimeError:
                pass
        findings = self.sanitizer_reports()
        rc = self.last_rc
        if exc[0] is None and (findings or rc not in (0, None)):
            self.dump_log()
            self.cleanup()
            raise AssertionError(f"postseald exit status {rc}, sanitizer "
                                 f"findings {findings}")
        self.cleanup()
        return False


class Conn:
    """A raw SMTP connection for byte-exact tests (smtplib hides the wire)."""

    def __init__(self, port, timeout=10):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.greeting = self.reply()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed; buffered %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """One whole (possibly multi-line) reply: (code, [lines])."""
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text + "\r\n")
        return self.reply()

    def closed(self, timeout=5):
        """True if the server closes the connection within timeout."""
        self.s.settimeout(timeout)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (socket.timeout, TimeoutError):
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


def check(cond, what):
    """An assertion that says what was expected."""
    if not cond:
        raise AssertionError(what)


def run_tests(tests):
    """Runs test functions in order; prints a summary line; exit status."""
    failed = 0
    for t in tests:
        start = time.monotonic()
        try:
            t()
            print(f"PASS {t.__name__} ({time.monotonic() - start:.1f}s)")
        except Exception as e:  # report and go on to the next test
            failed += 1
            print(f"FAIL {t.__name__}: {type(e).__name__}: {e}")
            import traceback
            traceback.print_exc()
        sys.stdout.flush()
    print(f"{len(tests) - failed} passed, {failed} failed")
    return 1 if failed else 0
