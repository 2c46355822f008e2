#!/usr/bin/python3
"""Bounded SMTP latency probe: end-of-DATA -> 250 at a target message rate.

N sessions (one thread each) stay connected and send messages on a fixed
schedule (open loop per session: message k of session i is due at
t0 + (i/N + k) * N/rate).  For every message the time from the moment the
final "<CRLF>.<CRLF>" has been written to the moment the complete reply
has been read is recorded.  Everything is bounded: a fixed duration, a
per-socket timeout, and at most rate*duration messages.

Loopback only: the host must be a 127.x.y.z address.

Prints one JSON object on stdout.
"""
import argparse
import ipaddress
import json
import socket
import sys
import threading
import time


def build_body(size, seq):
    hdr = (
        "From: <a@bench.test>\r\n"
        "To: <b@bench.example>\r\n"
        f"Subject: latency probe {seq}\r\n"
        f"Message-ID: <lat-{seq}@bench.test>\r\n"
        "\r\n"
    )
    out = [hdr]
    n = len(hdr)
    line = "x" * 76 + "\r\n"
    while n + len(line) <= size:
        out.append(line)
        n += len(line)
    if size - n > 2:
        out.append("y" * (size - n - 2) + "\r\n")
    out.append(".\r\n")
    return "".join(out).encode()


class Reader:
    def __init__(self, sock):
        self.f = sock.makefile("rb")

    def reply(self):
        """Read one (possibly multi-line) reply; return (code, lines)."""
        lines = []
        while True:
            line = self.f.readline(4096)
            if not line:
                raise ConnectionError("connection closed by server")
            lines.append(line)
            if len(line) < 4 or line[3:4] != b"-":
                break
        try:
            code = int(lines[-1][:3])
        except ValueError:
            code = -1
        return code, lines


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    k = max(0, min(len(sorted_vals) - 1, int(round(p / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--rate", type=float, required=True, help="target messages/s, all sessions together")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load (max 120)")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--timeout", type=float, default=30.0, help="per-socket-operation timeout, s")
    ap.add_argument("--from", dest="mail_from", default="a@bench.test")
    ap.add_argument("--to", dest="rcpt_to", default="b@bench.example")
    a = ap.parse_args()

    if not ipaddress.ip_address(a.host).is_loopback:
        sys.exit("latency.py: refusing a non-loopback host")
    if not (0 < a.duration <= 120) or not (0 < a.rate <= 1e6) or not (1 <= a.sessions <= 2000):
        sys.exit("latency.py: duration must be in (0,120], rate in (0,1e6], sessions in [1,2000]")

    interval = a.sessions / a.rate          # seconds between messages of one session
    body = build_body(a.size, 0)
    envelope = f"MAIL FROM:<{a.mail_from}>\r\nRCPT TO:<{a.rcpt_to}>\r\nDATA\r\n".encode()
    lock = threading.Lock()
    lat = []            # seconds, end-of-data -> reply
    lag = []            # seconds a message started after its scheduled time
    errors = []
    counts = {"ok": 0, "rejected": 0, "connect_failed": 0}
    t0_box = [0.0]

    def set_t0():
        t0_box[0] = time.perf_counter() + 0.05

    barrier = threading.Barrier(a.sessions + 1, action=set_t0)

    def session(i):
        sock = None
        try:
            sock = socket.create_connection((a.host, a.port), timeout=a.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            r = Reader(sock)
            code, _ = r.reply()
            if code != 220:
                raise RuntimeError(f"greeting {code}")
            sock.sendall(b"EHLO latency.bench.test\r\n")
            code, lines = r.reply()
            if code != 250:
                raise RuntimeError(f"EHLO {code}")
            pipelining = any(l[4:].strip().upper() == b"PIPELINING" for l in lines)
        except Exception as e:  # noqa: BLE001
            with lock:
                counts["connect_failed"] += 1
                errors.append(f"session {i}: setup: {e}")
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            if sock:
                sock.close()
            return
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            sock.close()
            return
        t0 = t0_box[0]
        end = t0 + a.duration
        due = t0 + (i / a.sessions) * interval
        my_lat, my_lag = [], []
        ok = rej = 0
        try:
            while due < end:
                now = time.perf_counter()
                if now < due:
                    time.sleep(due - now)
                    now = time.perf_counter()
                my_lag.append(now - due)
                if pipelining:
                    sock.sendall(envelope)
                    codes = [r.reply()[0] for _ in range(3)]
                else:
                    codes = []
                    for cmd in envelope.split(b"\r\n")[:3]:
                        sock.sendall(cmd + b"\r\n")
                        codes.append(r.reply()[0])
                if codes != [250, 250, 354]:
                    rej += 1
                    if codes[2] == 354:
                        sock.sendall(b".\r\n")
                        r.reply()
                    sock.sendall(b"RSET\r\n")
                    r.reply()
                else:
                    sock.sendall(body)
                    t_eod = time.perf_counter()
                    code, lines = r.reply()
                    t_rep = time.perf_counter()
                    if code == 250:
                        ok += 1
                        my_lat.append(t_rep - t_eod)
                    else:
                        rej += 1
                        with lock:
                            if len(errors) < 20:
                                errors.append(f"session {i}: DATA reply {lines[-1]!r}")
                due += interval
            sock.sendall(b"QUIT\r\n")
            try:
                r.reply()
            except Exception:  # noqa: BLE001
                pass
        except Exception as e:  # noqa: BLE001
            with lock:
                if len(errors) < 20:
                    errors.append(f"session {i}: {type(e).__name__}: {e}")
        finally:
            sock.close()
            with lock:
                lat.extend(my_lat)
                lag.extend(my_lag)
                counts["ok"] += ok
                counts["rejected"] += rej

    threads = [threading.Thread(target=session, args=(i,), daemon=True) for i in range(a.sessions)]
    for t in threads:
        t.start()
    try:
        barrier.wait(timeout=a.timeout + 5)
    except threading.BrokenBarrierError:
        pass
    start = t0_box[0] or time.perf_counter()
    deadline = start + a.duration + a.timeout + 10
    for t in threads:
        t.join(max(0.0, deadline - time.perf_counter()))
    elapsed = time.perf_counter() - start
    hung = sum(t.is_alive() for t in threads)

    lat.sort()
    lag.sort()
    ms = lambda v: None if v is None else round(v * 1000.0, 3)  # noqa: E731
    out = {
        "target_rate": a.rate,
        "sessions": a.sessions,
        "duration_s": a.duration,
        "size": a.size,
        "messages_ok": counts["ok"],
        "messages_rejected": counts["rejected"],
        "sessions_failed": counts["connect_failed"],
        "sessions_hung": hung,
        "achieved_rate": round(counts["ok"] / a.duration, 1),
        "elapsed_s": round(elapsed, 3),
        "eod_to_250_ms": {
            "p50": ms(percentile(lat, 50)),
            "p90": ms(percentile(lat, 90)),
            "p99": ms(percentile(lat, 99)),
            "p999": ms(percentile(lat, 99.9)),
            "max": ms(lat[-1] if lat else None),
            "n": len(lat),
        },
        "start_lag_ms": {"p50": ms(percentile(lag, 50)), "p99": ms(percentile(lag, 99)),
                         "max": ms(lag[-1] if lag else None)},
        "errors": errors[:20],
    }
    print(json.dumps(out))
    return 0 if (counts["connect_failed"] == 0 and counts["rejected"] == 0 and not hung and lat) else 1


if __name__ == "__main__":
    sys.exit(main())
