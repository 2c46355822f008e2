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


# Reservation sockets, held for the life of the test process. postseald
# binds with SO_REUSEPORT, so a port that was merely free a moment ago
# could be bound by two daemons of tests running in parallel (ctest -j)
# and connections would cross between them. A socket bound here with
# SO_REUSEPORT (never listening) lets our daemon bind the port too, while
# the kernel hands the port to no other bind(0).
_reserved = []


def free_port(reserve=False):
    """A free loopback port. With reserve (ports postseald will bind with
    SO_REUSEPORT), it stays reserved for this test process; servers that
    bind exclusively (smtp-sink, Python sinks) take an unreserved one, and
    a clash there fails loudly instead of sharing the port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reserve:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    if reserve:
        _reserved.append(s)
    else:
        s.close()
    return port


_closed_port = []


def _closed_udp_port():
    """A loopback UDP port nothing listens on, kept bound-but-unread by no
    one: a port taken from bind(0) and released. Queries sent there get
    ICMP port unreachable, so lookups fail at once."""
    if not _closed_port:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        _closed_port.append(s.getsockname()[1])
        s.close()
    return _closed_port[0]


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
                 env=None, submissions=False):
        self.tmp = tempfile.mkdtemp(prefix="postseal-test-")
        self.spool = spool_dir or os.path.join(self.tmp, "spool")
        self.smtp_port = free_port(reserve=True)
        self.submission_port = free_port(reserve=True)
        # Implicit TLS (needs tls: cert_file/key_file in extra).
        self.submissions_port = free_port(reserve=True) if submissions else 0
        self.metrics_port = free_port(reserve=True)
        self.threads = threads
        self.config_path = os.path.join(self.tmp, "postseald.yaml")
        nets = mynetworks if mynetworks is not None else ["127.0.0.0/8"]
        self.config_text = (
            "hostname: mx.test.example\n"
            f"threads: {threads}\n"
            "listen:\n"
            f"  smtp: 127.0.0.1:{self.smtp_port}\n"
            f"  submission: 127.0.0.1:{self.submission_port}\n"
            f"  metrics: 127.0.0.1:{self.metrics_port}\n" +
            (f"  submissions: 127.0.0.1:{self.submissions_port}\n"
             if submissions else "") +
            f"spool_dir: {self.spool}\n"
            "mynetworks:\n" + "".join(f"  - {n}\n" for n in nets) +
            self._safe_defaults(extra))
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

    def _safe_defaults(self, extra):
        """A test daemon never asks the system resolver (its MX lookups
        could leave the machine) and never writes mail outside its temp
        dir: unless the test says otherwise, DNS goes to a closed loopback
        port (every lookup fails temporarily, at once) and local mail to a
        Maildir under the temp dir."""
        text = extra
        if not any(line.startswith("dns:") for line in extra.splitlines()):
            text += (f"dns:\n  servers:\n    - 127.0.0.1:{_closed_udp_port()}"
                     "\n  timeout_ms: 200\n  tries: 1\n")
        if "local_transport:" not in extra:
            text += f"local_transport: maildir:{self.tmp}/mail/%d/%u\n"
        return text

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
        text += ("mynetworks:\n" + "".join(f"  - {n}\n" for n in nets) +
                 self._safe_defaults(extra))
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


class SmtpSink:
    """A scripted SMTP server on 127.0.0.1 for delivery tests (the next hop).

    rcpt_reply(addr) -> None (250) or (code, "x.y.z text"): the RCPT answer.
    delay: seconds to wait before answering end of data (a slow server).
    tls: an ssl.SSLContext (server side): STARTTLS is offered and done with
    it; starttls_reply: answer STARTTLS with this line instead (a refusal).
    Every accepted message is kept in .messages as (sender, [rcpts], data),
    and in .tls the TLS version it came under (None: plaintext) and
    whether that session was resumed.
    Handles PIPELINING by reading commands one line at a time. Each
    connection is a thread; stop() closes the listener and waits for them.
    """

    def __init__(self, port=None, rcpt_reply=None, delay=0.0, tls=None,
                 starttls_reply=None, requiretls=False):
        import threading
        self.port = port or free_port()
        self.rcpt_reply = rcpt_reply
        self.delay = delay
        self.tls_ctx = tls
        self.starttls_reply = starttls_reply
        self.requiretls = requiretls  # advertise REQUIRETLS inside TLS
        self.mail_params = []  # per message: the MAIL parameters, upper
        self.tls = []
        self.messages = []
        self.lock = threading.Lock()
        self.threads = []
        self.sessions = 0
        self.stopping = False
        self.sock = None
        self.socks = []

    def start(self):
        import threading
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(128)
        self.sock.settimeout(0.2)
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self.threads.append(t)
        return self

    def _accept_loop(self):
        import threading
        while not self.stopping:
            try:
                s, _ = self.sock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            with self.lock:
                self.sessions += 1
                self.socks.append(s)
            t = threading.Thread(target=self._session, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def _session(self, s):
        s.settimeout(30)
        f = s.makefile("rb")
        try:
            self._dialogue(s, f)
        except (OSError, ValueError):
            pass
        finally:
            try:
                f.close()
                s.close()
            except OSError:
                pass

    def _dialogue(self, s, f):
        s.sendall(b"220 sink.test ESMTP\r\n")
        sender, rcpts, params = None, [], []
        in_tls = False
        for _ in range(100000):
            line = f.readline(4096)
            if not line:
                return
            cmd = line.decode("utf-8", "replace").strip()
            verb = cmd[:4].upper()
            if cmd.upper() == "STARTTLS" and self.tls_ctx and not in_tls:
                if self.starttls_reply:
                    s.sendall(self.starttls_reply.encode() + b"\r\n")
                    continue
                s.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                s = self.tls_ctx.wrap_socket(s, server_side=True)
                f = s.makefile("rb")
                in_tls = True
                sender, rcpts = None, []
                continue
            if verb == "EHLO":
                offer = (b"250-STARTTLS\r\n"
                         if self.tls_ctx and not in_tls else b"")
                if in_tls and self.requiretls:
                    offer += b"250-REQUIRETLS\r\n"
                s.sendall(b"250-sink.test\r\n250-PIPELINING\r\n" + offer +
                          b"250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == "HELO":
                s.sendall(b"250 sink.test\r\n")
            elif verb == "MAIL":
                sender = cmd[10:].split(">")[0].lstrip("<")
                params = cmd.split(">", 1)[1].upper().split() if ">" in cmd \
                    else []
                rcpts = []
                s.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == "RCPT":
                addr = cmd[8:].split(">")[0].lstrip("<")
                r = self.rcpt_reply(addr) if self.rcpt_reply else None
                if r is None:
                    rcpts.append(addr)
                    s.sendall(b"250 2.1.5 Ok\r\n")
                else:
                    s.sendall(f"{r[0]} {r[1]}\r\n".encode())
            elif verb == "DATA":
                if not rcpts:
                    s.sendall(b"554 5.5.1 No valid recipients\r\n")
                    continue
                s.sendall(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                data = []
                for _ in range(10000000):
                    dl = f.readline(65536)
                    if not dl or dl == b".\r\n":
                        break
                    data.append(dl[1:] if dl.startswith(b".") else dl)
                if self.delay:
                    time.sleep(self.delay)
                with self.lock:
                    self.messages.append((sender, list(rcpts), b"".join(data)))
                    self.mail_params.append(params)
                    self.tls.append((s.version(), s.session_reused)
                                    if in_tls else (None, False))
                s.sendall(b"250 2.0.0 Ok: queued\r\n")
            elif verb == "RSET":
                sender, rcpts = None, []
                s.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == "NOOP":
                s.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == "QUIT":
                s.sendall(b"221 2.0.0 Bye\r\n")
                return
            else:
                s.sendall(b"502 5.5.2 Command not recognized\r\n")

    def count(self):
        with self.lock:
            return len(self.messages)

    def stop(self):
        self.stopping = True
        if self.sock is not None:
            self.sock.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout=5)


def wait_until(pred, timeout, step=0.1):
    """Polls pred() until it is true or timeout seconds pass; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def metric_value(text, name):
    """The value of one sample line `name value` in a metrics page."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None
