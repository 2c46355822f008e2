"""DNS servers on loopback for integration tests.

Nsd: Debian's nsd (/usr/sbin/nsd), authoritative for the zones a test
gives as text, on 127.0.0.1 and a free port (UDP and TCP on the same
port), with its configuration, database, pid and log in a temporary
directory, no control socket and no privilege drop.

FaultDns: a scripted server thread in this process for the failures a real
server will not produce on demand: SERVFAIL, REFUSED, FORMERR, silence
(timeout), a malformed answer, noise, a truncated answer. A few records
may be given to answer, with AD if asked (a validating resolver's claim,
without DNSSEC). Every other name is NXDOMAIN with an SOA. It counts the
queries it sees per name.

sign_zone(): a zone signed with Debian's ldns-keygen and ldns-signzone
(ECDSA P-256, NSEC), with the DS record that anchors it, for Nsd to serve.

Unbound: Debian's unbound as a validating resolver on 127.0.0.1 and a free
port, with trust anchors for the signed test zones and stub zones pointing
at Nsd; it asks no other server (the root itself is a stub to Nsd, which
refuses what it does not serve), so it answers AD for the signed zones,
no AD for unsigned ones, and SERVFAIL for bogus data.

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
UNBOUND = "/usr/sbin/unbound"
LDNS_KEYGEN = "/usr/bin/ldns-keygen"
LDNS_SIGNZONE = "/usr/bin/ldns-signzone"

TYPE_A, TYPE_SOA, TYPE_MX, TYPE_OPT, TYPE_TLSA = 1, 6, 15, 41, 52


def have_nsd():
    return os.access(NSD, os.X_OK)


def have_dnssec_tools():
    """nsd, unbound and the ldns signing tools (Debian ldnsutils)."""
    return all(os.access(p, os.X_OK)
               for p in (NSD, UNBOUND, LDNS_KEYGEN, LDNS_SIGNZONE))


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


def rdata_a(ip):
    return socket.inet_aton(ip)


def rdata_mx(pref, host):
    return struct.pack(">H", pref) + encode_name(host)


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


class _DnsDaemon:
    """What Nsd and Unbound share: a foreground daemon on a UDP/TCP port,
    its output in <tmp>/<out_name>, ready once it answers an SOA query;
    stop() ends it and removes tmp. Subclasses set port, tmp, proc and
    provide read_log()."""

    def _launch(self, argv, out_name, probe, what, timeout, probe_timeout):
        self.log = open(os.path.join(self.tmp, out_name), "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            answer = udp_query(self.port, probe, TYPE_SOA,
                               timeout=probe_timeout)
            if answer is not None and answer[3] & 0x0f == 0:
                return self
            time.sleep(0.05)
        out = self.read_log()
        self.stop()
        raise RuntimeError(f"{what} did not answer on port {self.port}:"
                           f"\n{out}")

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


class Nsd(_DnsDaemon):
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
        return self._launch([NSD, "-d", "-c", self.conf], "nsd.out",
                            sorted(self.zones)[0], "nsd", timeout, 0.2)

    def read_log(self):
        text = ""
        for name in ("nsd.out", "nsd.log"):
            try:
                with open(os.path.join(self.tmp, name), "rb") as f:
                    text += f.read().decode("utf-8", "replace")
            except OSError:
                pass
        return text


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
    records: {name: [(qtype, rdata bytes), ...]}: answered with TTL 60;
    another type of a listed name is NODATA with the SOA.
    Any other name: NXDOMAIN with an SOA for "test" (negative TTL 300).
    ad: every answer has AD set.
    .queries counts queries per lower-case name; .log keeps
    (name, qtype, has_opt, ad_bit, over_tcp) per query."""

    def __init__(self, faults=None, tcp=False, records=None, ad=False):
        self.faults = {k.lower().rstrip("."): v
                       for k, v in (faults or {}).items()}
        self.records = {k.lower().rstrip("."): v
                        for k, v in (records or {}).items()}
        self.ad = ad
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

    def _header(self, qid, qflags, rcode, an=0, ns=0, tc=False):
        flags = 0x8000 | (qflags & 0x0100) | 0x0080 | rcode
        if tc:
            flags |= 0x0200
        if self.ad:
            flags |= 0x0020
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
        if name in self.records:
            rrs = [rd for t, rd in self.records[name] if t == qtype]
            if not rrs:
                return (self._header(qid, qflags, 0, ns=1) + question +
                        self._soa())
            body = b"".join(encode_name(name) +
                            struct.pack(">HHIH", qtype, 1, 60, len(rd)) + rd
                            for rd in rrs)
            return self._header(qid, qflags, 0, an=len(rrs)) + question + body
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


# -- DNSSEC --

def _zone_text(name, body):
    """body as a master file with $ORIGIN and $TTL, as Nsd writes it."""
    head = ""
    if "$ORIGIN" not in body:
        head += f"$ORIGIN {name.rstrip('.')}.\n"
    if "$TTL" not in body:
        head += "$TTL 300\n"
    return head + body.strip() + "\n"


def sign_zone(name, body, folder):
    """Signs zone `name` (master-file body, as Nsd takes) with a fresh KSK
    and ZSK (ECDSAP256SHA256) made by ldns-keygen in folder; the
    signatures are valid from now for four weeks (ldns-signzone's
    default). Returns (signed zone text, DS record text of the KSK: the
    trust anchor)."""
    name = name.rstrip(".")
    os.makedirs(folder, exist_ok=True)

    def run(args):
        out = subprocess.run(args, cwd=folder, check=True, timeout=60,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return out.stdout.decode().strip()

    ksk = run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", "-k", name])
    zsk = run([LDNS_KEYGEN, "-a", "ECDSAP256SHA256", name])
    zfile = os.path.join(folder, f"{name}.zone")
    with open(zfile, "w") as f:
        f.write(_zone_text(name, body))
    run([LDNS_SIGNZONE, "-o", name, zfile, ksk, zsk])
    with open(zfile + ".signed") as f:
        signed = f.read()
    with open(os.path.join(folder, ksk + ".ds")) as f:
        ds = f.read().strip()
    return signed, ds


class Unbound(_DnsDaemon):
    """A validating resolver on 127.0.0.1:port.

    stubs: {zone: nsd_port}: zones whose servers are that Nsd on
    127.0.0.1; "." may be one of them (then every other name goes there
    too). anchors: DS (or DNSKEY) record texts, the trust anchors. No root
    hints are used and no other server is asked: a name outside the stub
    zones goes to the "." stub if there is one (Nsd REFUSEs it), else it
    fails at once. Use as a context manager, or start() and stop()."""

    def __init__(self, stubs, anchors=()):
        self.stubs = stubs
        self.anchors = list(anchors)
        self.port = free_udp_tcp_port()
        self.tmp = tempfile.mkdtemp(prefix="postseal-unbound-")
        self.conf = os.path.join(self.tmp, "unbound.conf")
        self.proc = None
        self.log = None

    def _write_config(self):
        anchors = os.path.join(self.tmp, "anchors")
        with open(anchors, "w") as f:
            f.write("".join(a.strip() + "\n" for a in self.anchors))
        hints = os.path.join(self.tmp, "root.hints")
        with open(hints, "w") as f:
            # No root servers: only the stub zones are ever asked.
            f.write(". 3600000 IN NS a.root.invalid.\n"
                    "a.root.invalid. 3600000 IN A 127.0.0.1\n")
        lines = [
            "server:",
            "  interface: 127.0.0.1",
            f"  port: {self.port}",
            "  outgoing-interface: 127.0.0.1",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  do-udp: yes",
            "  do-tcp: yes",
            "  do-daemonize: no",
            "  use-syslog: no",
            '  logfile: ""',
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.tmp}"',
            f'  pidfile: "{self.tmp}/unbound.pid"',
            "  num-threads: 1",
            "  so-reuseport: no",
            "  verbosity: 1",
            "  val-log-level: 2",
            "  access-control: 127.0.0.0/8 allow",
            "  do-not-query-localhost: no",
            "  qname-minimisation: no",
            "  target-fetch-policy: \"0 0 0 0 0\"",
            "  harden-referral-path: no",
            "  prefetch: no",
            "  serve-expired: no",
            "  trust-anchor-signaling: no",
            "  root-key-sentinel: no",
            '  module-config: "validator iterator"',
            "  val-permissive-mode: no",
        ]
        # Unbound answers the special-use TLDs (test, invalid, ...) itself
        # unless told not to (RFC 6761 default local zones).
        for tld in sorted({z.rstrip(".").split(".")[-1]
                           for z in self.stubs if z.strip(".")}):
            lines.append(f'  local-zone: "{tld}." nodefault')
        if "." not in {z.rstrip(".") or "." for z in self.stubs}:
            lines.append(f'  root-hints: "{hints}"')
        if self.anchors:
            lines.append(f'  trust-anchor-file: "{anchors}"')
        lines += ["remote-control:", "  control-enable: no"]
        for zone, port in sorted(self.stubs.items()):
            lines += ["stub-zone:",
                      f'  name: "{zone.rstrip(".") or "."}"',
                      f"  stub-addr: 127.0.0.1@{port}"]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        self._write_config()
        probe = next((z for z in sorted(self.stubs) if z.strip(".")), ".")
        return self._launch([UNBOUND, "-d", "-c", self.conf], "unbound.out",
                            probe, "unbound", timeout, 0.5)

    def read_log(self):
        try:
            with open(os.path.join(self.tmp, "unbound.out"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""
