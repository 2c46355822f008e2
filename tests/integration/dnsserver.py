"""DNS servers on loopback for integration tests.

Nsd: Debian's nsd (/usr/sbin/nsd), authoritative for the zones a test
gives as text, on 127.0.0.1 and a free port (UDP and TCP on the same
port), with its configuration, database, pid and log in a temporary
directory, no control socket and no privilege drop.

FaultDns: a scripted server thread in this process for the failures a real
server will not produce on demand: SERVFAIL, REFUSED, FORMERR, silence
(timeout), a malformed answer, noise, a truncated answer. Every other name
is NXDOMAIN with an SOA. It counts the queries it sees per name.

Nothing here talks to anything but 127.0.0.1; every wait is bounded.
Only the Python standard library is used.
"""

import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

NSD = "/usr/sbin/nsd"

TYPE_A, TYPE_SOA, TYPE_OPT = 1, 6, 41


def have_nsd():
    return os.access(NSD, os.X_OK)


def free_udp_tcp_port(tries=50):
    """A loopback port free for both UDP and TCP (a DNS server needs both)."""
    for _ in range(tries):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


def encode_name(name):
    """Wire form of a dotted name (no compression)."""
    out = b""
    for label in name.strip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def build_query(name, qtype, qid=None):
    qid = random.randrange(65536) if qid is None else qid
    return (struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) +
            encode_name(name) + struct.pack(">HH", qtype, 1))


def udp_query(port, name, qtype, timeout=1.0):
    """One UDP query to 127.0.0.1:port; the raw answer or None."""
    q = build_query(name, qtype)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(q, ("127.0.0.1", port))
            data, _ = s.recvfrom(65535)
        except OSError:
            return None
    return data if data[:2] == q[:2] else None


class Nsd:
    """nsd serving zones = {"example.test": "zone file body", ...}.

    Zone bodies are master-file text; $ORIGIN is set to the zone name and
    $TTL to 300 unless the body says otherwise. Use as a context manager,
    or start() and stop()."""

    def __init__(self, zones):
        self.zones = zones
        self.port = free_udp_tcp_port()
        self.tmp = tempfile.mkdtemp(prefix="postseal-nsd-")
        self.conf = os.path.join(self.tmp, "nsd.conf")
        self.log_path = os.path.join(self.tmp, "nsd.log")
        self.proc = None

    def _write_config(self):
        lines = [
            "server:",
            "  ip-address: 127.0.0.1",
            f"  port: {self.port}",
            "  do-ip6: no",
            '  username: ""',
            '  chroot: ""',
            f'  zonesdir: "{self.tmp}"',
            '  database: ""',
            f'  zonelistfile: "{self.tmp}/zone.list"',
            f'  xfrdfile: "{self.tmp}/xfrd.state"',
            f'  xfrdir: "{self.tmp}"',
            f'  pidfile: "{self.tmp}/nsd.pid"',
            f'  logfile: "{self.log_path}"',
            "  server-count: 1",
            "  reuseport: no",
            "  hide-version: yes",
            "  verbosity: 1",
            "remote-control:",
            "  control-enable: no",
        ]
        for i, (name, body) in enumerate(sorted(self.zones.items())):
            zfile = os.path.join(self.tmp, f"zone{i}.zone")
            head = ""
            if "$ORIGIN" not in body:
                head += f"$ORIGIN {name.rstrip('.')}.\n"
            if "$TTL" not in body:
                head += "$TTL 300\n"
            with open(zfile, "w") as f:
                f.write(head + body.strip() + "\n")
            lines += ["zone:", f'  name: "{name.rstrip(".")}."',
                      f'  zonefile: "{zfile}"']
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        self._write_config()
        self.log = open(os.path.join(self.tmp, "nsd.out"), "wb")
        self.proc = subprocess.Popen([NSD, "-d", "-c", self.conf],
                                     stdout=self.log,
                                     stderr=subprocess.STDOUT)
        first = sorted(self.zones)[0]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            answer = udp_query(self.port, first, TYPE_SOA, timeout=0.2)
            if answer is not None and answer[3] & 0x0f == 0:
                return self
            time.sleep(0.05)
        out = self.read_log()
        self.stop()
        raise RuntimeError(f"nsd did not answer on port {self.port}:\n{out}")

    def read_log(self):
        text = ""
        for name in ("nsd.out", "nsd.log"):
            try:
                with open(os.path.join(self.tmp, name), "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return text

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


class FaultDns:
    """A UDP (and with tcp=True also TCP) DNS server thread on 127.0.0.1.

    faults: {name: behaviour}, name without trailing dot, any case; the
    behaviours are
      "servfail", "refused", "formerr": that RCODE, the question echoed;
      "timeout": no answer at all;
      "garbage": header and question right, then an answer record cut
                 short (a malformed message for the same query);
      "noise":   random bytes;
      "truncated": TC=1 and no records (over TCP, if served: NXDOMAIN).
    Any other name: NXDOMAIN with an SOA for "test" (negative TTL 300).
    .queries counts queries per lower-case name; .log keeps
    (name, qtype, has_opt, ad_bit, over_tcp) per query."""

    def __init__(self, faults=None, tcp=False):
        self.faults = {k.lower().rstrip("."): v
                       for k, v in (faults or {}).items()}
        self.tcp = tcp
        self.port = free_udp_tcp_port()
        self.lock = threading.Lock()
        self.queries = {}
        self.log = []
        self.stopping = False
        self.threads = []
        self.socks = []

    # -- wire --

    @staticmethod
    def _parse(q):
        """(id, flags, name, qtype, question bytes, has_opt) or None."""
        if len(q) < 12:
            return None
        qid, flags, qd, _, _, ar = struct.unpack(">HHHHHH", q[:12])
        if qd != 1:
            return None
        labels, i = [], 12
        while i < len(q) and q[i] != 0:
            n = q[i]
            if n & 0xc0:
                return None
            labels.append(q[i + 1:i + 1 + n].decode("ascii", "replace"))
            i += 1 + n
        if i + 5 > len(q):
            return None
        qtype = struct.unpack(">H", q[i + 1:i + 3])[0]
        question = q[12:i + 5]
        rest = q[i + 5:]
        has_opt = ar > 0 and len(rest) >= 11 and rest[1:3] == b"\x00\x29"
        return qid, flags, ".".join(labels).lower(), qtype, question, has_opt

    @staticmethod
    def _header(qid, qflags, rcode, an=0, ns=0, tc=False):
        flags = 0x8000 | (qflags & 0x0100) | 0x0080 | rcode
        if tc:
            flags |= 0x0200
        return struct.pack(">HHHHHH", qid, flags, 1, an, ns, 0)

    def _soa(self):
        rdata = (encode_name("ns.test") + encode_name("host.test") +
                 struct.pack(">IIIII", 1, 3600, 600, 86400, 300))
        return (encode_name("test") +
                struct.pack(">HHIH", TYPE_SOA, 1, 300, len(rdata)) + rdata)

    def answer(self, q, over_tcp=False):
        """The reply bytes for query q, or None for no reply."""
        p = self._parse(q)
        if p is None:
            return None
        qid, qflags, name, qtype, question, has_opt = p
        with self.lock:
            self.queries[name] = self.queries.get(name, 0) + 1
            self.log.append((name, qtype, has_opt, bool(qflags & 0x0020),
                             over_tcp))
        fault = self.faults.get(name)
        if fault == "timeout":
            return None
        if fault == "noise":
            return bytes(random.randrange(256) for _ in range(40))
        if fault in ("servfail", "refused", "formerr"):
            rcode = {"servfail": 2, "refused": 5, "formerr": 1}[fault]
            return self._header(qid, qflags, rcode) + question
        if fault == "garbage":
            # One answer record whose RDLENGTH runs past the end.
            return (self._header(qid, qflags, 0, an=1) + question +
                    b"\xc0\x0c" + struct.pack(">HHIH", TYPE_A, 1, 60, 200) +
                    b"\x01\x02")
        if fault == "truncated" and not over_tcp:
            return self._header(qid, qflags, 0, tc=True) + question
        return self._header(qid, qflags, 3, ns=1) + question + self._soa()

    def count(self, name):
        with self.lock:
            return self.queries.get(name.lower().rstrip("."), 0)

    # -- serving --

    def start(self):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", self.port))
        u.settimeout(0.2)
        self.socks.append(u)
        self._spawn(self._udp_loop, u)
        if self.tcp:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind(("127.0.0.1", self.port))
            t.listen(16)
            t.settimeout(0.2)
            self.socks.append(t)
            self._spawn(self._tcp_loop, t)
        return self

    def _spawn(self, fn, *args):
        th = threading.Thread(target=fn, args=args, daemon=True)
        th.start()
        self.threads.append(th)

    def _udp_loop(self, u):
        while not self.stopping:
            try:
                q, peer = u.recvfrom(65535)
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            reply = self.answer(q)
            if reply is not None:
                try:
                    u.sendto(reply, peer)
                except OSError:
                    pass

    def _tcp_loop(self, t):
        while not self.stopping:
            try:
                c, _ = t.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            self._spawn(self._tcp_conn, c)

    def _tcp_conn(self, c):
        c.settimeout(5)
        try:
            for _ in range(100):
                head = c.recv(2, socket.MSG_WAITALL)
                if len(head) < 2:
                    return
                n = struct.unpack(">H", head)[0]
                q = c.recv(n, socket.MSG_WAITALL)
                reply = self.answer(q, over_tcp=True)
                if reply is None:
                    continue
                c.sendall(struct.pack(">H", len(reply)) + reply)
        except OSError:
            pass
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        for s in self.socks:
            s.close()
        for th in self.threads:
            th.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
