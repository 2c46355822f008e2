"""Outbound delivery: postseald relays queued mail to its relayhost, records
each recipient's outcome durably (DONE), retries with backoff, and after a
crash delivers again what was not finished (at least once). The next hop is
Postfix's smtp-sink or a scripted Python server (harness.SmtpSink), all on
127.0.0.1; every wait is bounded."""

import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon, SmtpSink, check, free_port,  # noqa: E402
                     metric_value, run_tests, wait_until)


def relay_config(port, concurrency=10, retry_initial=1, retry_max=2):
    return (f'relayhost: "[127.0.0.1]:{port}"\n'
            "delivery:\n"
            f"  concurrency: {concurrency}\n"
            f"  retry_initial: {retry_initial}\n"
            f"  retry_max: {retry_max}\n"
            "  connect_timeout: 5\n")


def send_tokens(d, tokens, rcpts=("rcpt@example.net",)):
    """Sends one message per token (in the subject); returns the tokens
    acknowledged with 250."""
    acked = []
    with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
        for t in tokens:
            body = (f"From: a@example.org\r\nSubject: token {t}\r\n\r\n"
                    f"body {t}\r\n")
            s.sendmail(f"s-{t}@example.org", list(rcpts), body)
            acked.append(t)
    return acked


def tokens_seen(sink):
    with sink.lock:
        msgs = list(sink.messages)
    seen = {}
    for _, _, data in msgs:
        m = re.search(rb"Subject: token (\S+)", data)
        if m:
            t = m.group(1).decode()
            seen[t] = seen.get(t, 0) + 1
    return seen


def count(log, event):
    return len(re.findall(rf"event={event} ", log))


def sink_count(path):
    """smtp-sink -c prints "sess=N quit=N mesg=N" counters, CR-separated."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return 0
    found = re.findall(r"mesg=(\d+)", text)
    return int(found[-1]) if found else 0


def test_smtp_source_to_smtp_sink():
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    sinkbin = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    check(os.path.exists(source) and os.path.exists(sinkbin),
          "smtp-source and smtp-sink installed (setup.sh)")
    n = 2000
    port = free_port()
    with Daemon(extra=relay_config(port)) as d:
        out_path = os.path.join(d.tmp, "sink.out")
        with open(out_path, "wb") as out:
            # -u drops root privileges; it is refused when not root.
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            sink = subprocess.Popen(
                [sinkbin, "-c"] + user + [f"127.0.0.1:{port}", "256"],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            r = subprocess.run(
                [source, "-s", "20", "-m", str(n), "-f", "load@example.org",
                 "-t", "sink@example.net", f"127.0.0.1:{d.smtp_port}"],
                capture_output=True, text=True, timeout=300)
            check(r.returncode == 0, f"smtp-source exit 0: {r.stderr[-300:]}")
            ok = wait_until(lambda: count(d.read_log(), "delivered") >= n, 120)
            log = d.read_log()
            check(ok, f"{n} delivered lines, got {count(log, 'delivered')}")
            check(count(log, "deferred") == 0, "nothing deferred")
            check(wait_until(lambda: d.queue() == [], 30),
                  f"queue empty, {len(d.queue())} left")
            check(wait_until(lambda: sink_count(out_path) >= n, 30),
                  f"smtp-sink counted {sink_count(out_path)} of {n}")
            text = d.metrics()
            got = metric_value(
                text, 'postseal_delivery_attempts_total{result="delivered"}')
            check(got == n, f"metrics: {got} delivered")
            check(metric_value(text, "postseal_queue_messages") == 0,
                  "queue gauge back to 0")
            reused = metric_value(
                text, 'postseal_delivery_connections_total{kind="reused"}')
            check(reused is not None and reused > 0, "connections reused")
            promtool = shutil.which("promtool")
            if promtool:
                pr = subprocess.run([promtool, "check", "metrics"],
                                    input=text, capture_output=True,
                                    text=True, timeout=30)
                check(pr.returncode == 0,
                      f"promtool clean: {pr.stdout}{pr.stderr}")
        finally:
            sink.terminate()
            sink.wait(timeout=10)


def test_next_hop_down_then_up():
    port = free_port()
    n = 20
    with Daemon(extra=relay_config(port)) as d:
        tokens = [f"down{i}" for i in range(n)]
        send_tokens(d, tokens)
        ok = wait_until(lambda: count(d.read_log(), "deferred") >= n, 20)
        check(ok, f"each message deferred while the next hop is down: "
                  f"{count(d.read_log(), 'deferred')}")
        check("4.4.1" in d.read_log(), "deferral says connect failed (4.4.1)")
        sink = SmtpSink(port=port).start()
        try:
            ok = wait_until(lambda: len(tokens_seen(sink)) == n, 30)
            check(ok, f"all {n} arrive after retry: {len(tokens_seen(sink))}")
            check(wait_until(lambda: d.queue() == [], 10), "queue empty")
            # Retries re-read the body from its spool record.
            check("local error" not in d.read_log(), "spool re-read works")
        finally:
            sink.stop()


def test_no_relayhost_keeps_messages():
    # No relayhost: MX routing. The harness points DNS at a closed
    # loopback port, so the lookup fails temporarily: deferred, kept.
    with Daemon(extra="delivery:\n  retry_initial: 1\n") as d:
        send_tokens(d, ["norelay"])
        ok = wait_until(lambda: re.search(
            r"event=deferred .*dest=smtp:example\.net .*dsn=4\.4\.3 "
            r"status=\"451 4\.4\.3 example\.net: DNS lookup failed",
            d.read_log()), 10)
        check(ok, "deferred with 4.4.3 (MX lookup failed temporarily)")
        check(re.search(r"event=deferred .*relay=none", d.read_log()),
              "relay=none in the deferred line")
        check(len(d.queue()) == 1, "the message stays queued")
        text = d.metrics()
        check(metric_value(text, "postseal_queue_messages") == 1,
              "queue gauge counts it")


def test_expiry_bounces():
    port = free_port()
    extra = relay_config(port) + "  max_lifetime: 1\n"
    with Daemon(extra=extra) as d:
        body = "Subject: e\r\n\r\nx\r\n"
        with smtplib.SMTP("127.0.0.1", d.smtp_port, timeout=30) as s:
            s.sendmail("a@example.org", ["x@example.net"], body)
            s.sendmail("", ["y@example.net"], body)
        check(wait_until(lambda: d.queue() == [], 20),
              f"expired messages leave the queue: {d.queue()}")
        log = d.read_log()
        check(re.search(r"event=bounced .*to=x@example.net .*dsn=4\.4\.7 "
                        r".*report=dsn", log), "x expired, reported")
        check(re.search(r"event=bounce_queued .*to=a@example.org", log),
              "a DSN was queued for the sender of x")
        check(re.search(r"event=bounced .*to=y@example.net .*dsn=4\.4\.7 "
                        r".*report=none_null_sender", log),
              "a bounce is never bounced")


def test_connect_timeout():
    """A next hop whose accept queue is full drops our SYNs: the connect
    timeout cancels the connect and the message is deferred."""
    import socket
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    port = lsock.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (never accepted)
            f = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        time.sleep(0.2)
        extra = relay_config(port, retry_initial=60, retry_max=60)
        extra = extra.replace("connect_timeout: 5", "connect_timeout: 1")
        with Daemon(extra=extra) as d:
            send_tokens(d, ["ctimeout"])
            ok = wait_until(lambda: "timed out" in d.read_log(), 10)
            check(ok, "deferred after the connect timeout")
            check(re.search(r"event=deferred .*dsn=4\.4\.1", d.read_log()),
                  "deferred with 4.4.1")
            check(len(d.queue()) == 1, "the message stays queued")
        # SIGTERM while a connect hangs: the connect is cancelled at once,
        # not after connect_timeout or the shutdown grace.
        extra = extra.replace("connect_timeout: 1", "connect_timeout: 60")
        with Daemon(extra=extra) as d:
            send_tokens(d, ["cstop"])
            time.sleep(0.5)
            start = time.monotonic()
            check(d.stop() == 0, "exit 0")
            took = time.monotonic() - start
            check(took < 5, f"stopped promptly ({took:.1f}s)")
    finally:
        for f in fillers:
            f.close()
        lsock.close()


def test_too_many_recipients_split():
    """A next hop that takes two recipients per transaction and says 452
    4.5.3 to the rest: the rest go again at once in a new transaction,
    not after the retry delay (60 s here)."""
    state = {"n": 0}

    def policy(addr):
        state["n"] += 1
        if addr in state.setdefault("said_452", set()):
            return None
        if state["n"] % 3 == 0:
            state["said_452"].add(addr)
            return (452, "4.5.3 Too many recipients")
        return None

    sink = SmtpSink(rcpt_reply=policy).start()
    try:
        with Daemon(extra=relay_config(sink.port, retry_initial=60,
                                       retry_max=60)) as d:
            rcpts = [f"r{i}@example.net" for i in range(5)]
            send_tokens(d, ["split"], rcpts=rcpts)
            got = lambda: sorted(r for _, rs, _ in list(sink.messages)
                                 for r in rs)
            ok = wait_until(lambda: got() == sorted(rcpts), 10)
            check(ok, f"all five delivered within seconds: {got()}")
            check(len(sink.messages) >= 2, "in more than one transaction")
            check(wait_until(lambda: d.queue() == [], 5), "queue empty")
    finally:
        sink.stop()


class CountingSink(SmtpSink):
    """An SmtpSink that records how many sessions were open at once."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.open_now = 0
        self.open_max = 0

    def _session(self, s):
        with self.lock:
            self.open_now += 1
            self.open_max = max(self.open_max, self.open_now)
        try:
            super()._session(s)
        finally:
            with self.lock:
                self.open_now -= 1


def test_destination_limit_is_global():
    """destination_concurrency holds for the whole daemon, not per worker
    thread: one worker owns each destination and runs every attempt to it
    (the other hands its due messages over)."""
    sink = CountingSink(delay=0.05).start()
    try:
        extra = relay_config(sink.port) + "  destination_concurrency: 2\n"
        with Daemon(extra=extra, threads=2) as d:
            tokens = [f"g{i}" for i in range(60)]
            # Twenty client sessions: SO_REUSEPORT spreads them by hash,
            # so both workers accept some (all on one: odds 2 in 2^20).
            for k in range(20):
                send_tokens(d, tokens[k * 3:(k + 1) * 3])
            ok = wait_until(lambda: len(tokens_seen(sink)) == 60, 30)
            check(ok, f"all 60 delivered: {len(tokens_seen(sink))}")
            check(all(v == 1 for v in tokens_seen(sink).values()),
                  "each exactly once")
            check(sink.open_max <= 2,
                  f"at most 2 sessions to the destination at once, "
                  f"daemon-wide: {sink.open_max}")
            log = d.read_log()
            qids = set(re.findall(r"event=queued qid=(\S+) session=0\.", log))
            check(qids, "worker 0 accepted some of them")
            qids1 = set(re.findall(r"event=queued qid=(\S+) session=1\.", log))
            check(qids1, "worker 1 accepted some of them")
            check(wait_until(lambda: d.queue() == [], 10), "queue empty")
    finally:
        sink.stop()


class FaultyHop:
    """A next hop that misbehaves on demand (mode), then recovers ("ok"):
    "garbage" greets with a line that is not SMTP; "421" closes with 421
    after MAIL; "drop" accepts MAIL, RCPT and DATA, reads part of the body
    and drops the connection. In "ok" it accepts and records messages.
    Counts connections, so a test can see there is no tight retry loop."""

    def __init__(self, mode):
        import threading
        self.mode = mode
        self.port = free_port()
        self.conns = 0
        self.messages = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
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
            with self.lock:
                self.conns += 1
            try:
                c.settimeout(10)
                self._session(c, c.makefile("rb"))
            except OSError:
                pass
            finally:
                c.close()

    def _session(self, c, f):
        mode = self.mode
        if mode == "garbage":
            c.sendall(b"HELLO I AM NOT AN SMTP SERVER\r\n")
            f.readline(1000)
            return
        c.sendall(b"220 faulty.test ESMTP\r\n")
        rcpts, data = [], []
        for _ in range(1000):
            line = f.readline(4096)
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                c.sendall(b"250-faulty.test\r\n250 8BITMIME\r\n")
            elif verb == b"MAIL":
                if mode == "421":
                    c.sendall(b"421 4.3.2 Service shutting down\r\n")
                    return
                c.sendall(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                rcpts.append(line[8:].split(b">")[0].decode())
                c.sendall(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                c.sendall(b"354 go\r\n")
                if mode == "drop":
                    f.readline(4096)
                    return  # the connection drops mid-DATA
                for _ in range(100000):
                    dl = f.readline(65536)
                    if not dl or dl == b".\r\n":
                        break
                    data.append(dl)
                with self.lock:
                    self.messages.append((rcpts, b"".join(data)))
                c.sendall(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                c.sendall(b"221 Bye\r\n")
                return
            else:
                c.sendall(b"250 Ok\r\n")

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.sock.close()


def test_next_hop_faults():
    """A next hop that answers garbage, says 421 mid-session, or drops the
    connection mid-DATA: each recipient is deferred (no bounce), retried
    with backoff (a few connections, not a loop), and delivered exactly
    once the hop behaves."""
    for mode in ("garbage", "421", "drop"):
        hop = FaultyHop(mode)
        try:
            with Daemon(extra=relay_config(hop.port, retry_initial=1,
                                           retry_max=1)) as d:
                send_tokens(d, [f"f{mode}"])
                ok = wait_until(lambda: count(d.read_log(), "deferred") >= 2,
                                15)
                check(ok, f"{mode}: deferred (and retried)")
                log = d.read_log()
                check(count(log, "bounced") == 0, f"{mode}: no bounce")
                time.sleep(2)
                with hop.lock:
                    n = hop.conns
                check(n <= 8, f"{mode}: {n} connections in ~4 s: backoff, "
                              f"not a tight loop")
                hop.mode = "ok"
                ok = wait_until(lambda: len(hop.messages) == 1, 15)
                check(ok, f"{mode}: delivered once the hop recovers")
                check(wait_until(lambda: d.queue() == [], 5),
                      f"{mode}: queue empty")
                time.sleep(1)
                check(len(hop.messages) == 1, f"{mode}: exactly once")
        finally:
            hop.stop()


def test_per_recipient_outcomes():
    seen = {}

    def policy(addr):
        if addr.startswith("perm"):
            return (550, "5.1.1 No such user")
        if addr.startswith("temp"):
            seen[addr] = seen.get(addr, 0) + 1
            if seen[addr] == 1:
                return (451, "4.2.0 Try again later")
        return None

    sink = SmtpSink(rcpt_reply=policy).start()
    try:
        with Daemon(extra=relay_config(sink.port)) as d:
            rcpts = ["ok@example.net", "perm@example.net", "temp@example.net"]
            send_tokens(d, ["outcomes"], rcpts=rcpts)
            check(wait_until(lambda: d.queue() == [], 30),
                  f"queue empty after retry: {d.queue()}")
            log = d.read_log()
            check(re.search(r"event=bounced .*to=perm@example.net .*"
                            r"dsn=5\.1\.1", log),
                  "perm bounced with 5.1.1")
            check(re.search(r"event=deferred .*to=temp@example.net .*"
                            r"dsn=4\.2\.0", log),
                  "temp deferred with 4.2.0")
            check(re.search(r"event=delivered .*to=temp@example.net", log),
                  "temp delivered on retry")
            ok_deliveries = sum(1 for _, r, _ in sink.messages
                                if "ok@example.net" in r)
            check(ok_deliveries == 1, f"ok delivered once: {ok_deliveries}")
            temp_deliveries = sum(1 for _, r, _ in sink.messages
                                  if "temp@example.net" in r)
            check(temp_deliveries == 1, f"temp delivered once: "
                                        f"{temp_deliveries}")
            # ok, temp, and the DSN reporting perm to the sender.
            check(count(log, "delivered") == 3, "three delivered lines")
            check(re.search(r"event=bounce_queued ", log), "DSN queued")
            dsns = [data for frm, _, data in sink.messages if frm == ""]
            check(len(dsns) == 1, f"one DSN reached the next hop: {len(dsns)}")
            import email
            rep = email.message_from_bytes(dsns[0] if isinstance(dsns[0], bytes)
                                           else dsns[0].encode())
            check(rep.get_content_type() == "multipart/report" and
                  rep.get_param("report-type") == "delivery-status",
                  f"RFC 3464 report: {rep.get_content_type()}")
            status = rep.get_payload()[1].as_string()
            check("Final-Recipient: rfc822; perm@example.net" in status and
                  "Status: 5.1.1" in status and "Action: failed" in status,
                  f"delivery-status names perm: {status[:400]}")
            check(count(log, "bounced") == 1, "one bounced line")
            text = d.metrics()
            check(metric_value(text, 'postseal_delivery_attempts_total'
                                     '{result="bounced"}') == 1,
                  "bounced counted")
    finally:
        sink.stop()


def test_kill9_redelivers():
    n = 40
    sink = SmtpSink(delay=0.3).start()
    tokens = [f"k{i}" for i in range(n)]
    d = Daemon(extra=relay_config(sink.port, concurrency=2))
    try:
        d.start()
        acked = send_tokens(d, tokens)
        check(wait_until(lambda: sink.count() >= 3, 30), "delivery started")
        d.kill9()
        before = len(tokens_seen(sink))
        check(before < n, f"killed in the middle ({before} of {n})")
        sink.delay = 0.0
        d.start()
        ok = wait_until(lambda: set(tokens_seen(sink)) >= set(acked), 60)
        check(ok, f"every acknowledged message arrives: "
                  f"{sorted(set(acked) - set(tokens_seen(sink)))}")
        check(wait_until(lambda: d.queue() == [], 20), "queue empty")
        check(d.stop() == 0, "clean stop")
        check(not d.sanitizer_reports(), "no sanitizer findings")
    finally:
        d.cleanup()
        sink.stop()


def test_sigterm_during_delivery():
    n = 40
    sink = SmtpSink(delay=0.3).start()
    tokens = [f"t{i}" for i in range(n)]
    d = Daemon(extra=relay_config(sink.port, concurrency=2))
    try:
        d.start()
        acked = send_tokens(d, tokens)
        check(wait_until(lambda: sink.count() >= 3, 30), "delivery started")
        start = time.monotonic()
        rc = d.stop()
        check(rc == 0, f"SIGTERM exit 0, got {rc}")
        check(time.monotonic() - start < 15, "stopped within the grace")
        delivered_before = count(d.read_log(), "delivered")
        check(delivered_before < n, "stopped in the middle")
        sink.delay = 0.0
        d.start()
        ok = wait_until(lambda: set(tokens_seen(sink)) >= set(acked), 60)
        check(ok, f"the rest arrives after restart: "
                  f"{sorted(set(acked) - set(tokens_seen(sink)))}")
        check(wait_until(lambda: d.queue() == [], 20), "queue empty")
        # DONE records made durable at the stop: nothing delivered twice.
        dup = [t for t, k in tokens_seen(sink).items() if k > 1]
        check(not dup, f"no duplicates after a clean stop: {dup}")
        check(d.stop() == 0, "clean stop")
        check(not d.sanitizer_reports(), "no sanitizer findings")
    finally:
        d.cleanup()
        sink.stop()


if __name__ == "__main__":
    sys.exit(run_tests([test_smtp_source_to_smtp_sink,
                        test_next_hop_down_then_up,
                        test_no_relayhost_keeps_messages,
                        test_too_many_recipients_split,
                        test_destination_limit_is_global,
                        test_next_hop_faults,
                        test_expiry_bounces,
                        test_connect_timeout,
                        test_per_recipient_outcomes,
                        test_kill9_redelivers,
                        test_sigterm_during_delivery]))
