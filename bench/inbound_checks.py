#!/usr/bin/python3
"""What the inbound checks cost: postseald receiving mail from outside
(not mynetworks) with SPF + DKIM verification + DMARC on, against the same
daemon with them off, in one run.

  postseal-bench send -> postseald A (trusted client: dual-signs, RSA-2048
  + Ed25519, for sender.test) -> postseald B (A is an outside client:
  checks on or off) -> postseal-bench sink

nsd on loopback serves sender.test's SPF ("ip4:127.0.0.1 -all"), both DKIM
keys and DMARC (p=reject); B's resolver cache is warm after the warm-up
run. The figure is B's CPU per message (user+system, from its start of
the run until its queue is empty) and B's rate; A shares the two cores,
so the rate is a lower bound for B alone. Every run checks that the sink
got exactly N and, with checks on, that a sample carries spf=pass,
dkim=pass (twice) and dmarc=pass from B.

The same load then runs against Postfix 3.7 as B (unless --no-postfix),
checks off and on, so the report gives ratios:

  postseal-bench send -> postseald A (as above) -> Postfix B -> sink

Postfix B is a private instance (tests/integration/postfix.py) relaying
dest.test to the same sink; A is an outside client there too (mynetworks
192.0.2.0/24). Its checks: SPF by postfix-policyd-spf-python (a spawn(8)
service behind check_policy_service in smtpd_recipient_restrictions,
adding Received-SPF), DKIM verification by OpenDKIM (Mode v, milter) and
DMARC by OpenDMARC (milter after OpenDKIM, reading OpenDKIM's
Authentication-Results and the Received-SPF header; no SPF of its own).
They resolve through a second nsd with the same zones:
  - policyd-spf (dnspython): a wrapper sets dnspython's default resolver
    to 127.0.0.1:<port> before it runs the packaged policyd-spf main();
  - OpenDKIM (libunbound): Nameservers 127.0.0.1@<port>; libunbound
    answers NXDOMAIN itself for names under .test (a default local-zone),
    so the Postfix runs' mail comes from sender.example (own keys, same
    records; see PF_DOMAIN);
  - OpenDMARC (libresolv, no nameserver option, port 53 fixed): runs in a
    private mount namespace (unshare -m) where a bind-mounted resolv.conf
    names 127.0.0.153, on whose port 53 the second nsd also listens.
Nothing on the system is changed. Postfix B's CPU is the sum over the
instance: the master's process tree (smtpd, cleanup, qmgr, smtp,
trivial-rewrite, postlogd, the spawned policy daemons; exited children via
the master's cutime/cstime) plus OpenDKIM and OpenDMARC (all threads),
read from /proc before and after each run. With checks on, a sample at
the sink must carry Received-SPF: Pass and Authentication-Results from
OpenDKIM (dkim=pass) and OpenDMARC (dmarc=pass). Checks off: the same
instance without the policy service and milters.

Postfix side needs root, postfix, opendkim, opendmarc,
postfix-policyd-spf-python and unshare (util-linux); their config lives
in a private folder under /run (OpenDKIM refuses files below a folder
others can write, like /tmp).

  bench/inbound_checks.py [-n 10000] [--size 4096] [--reps 3]
                          [--no-postfix]
                          [--out bench/results/inbound-checks-DATE.md]

POSTSEAL_BUILD selects the build tree (default build/). Loopback only;
every wait bounded."""

import argparse
import base64
import glob
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("POSTSEAL_BUILD", os.path.join(HERE, "..", "build"))
from harness import BUILD, Daemon, free_port, metric_value, wait_until  # noqa
import dnsserver  # noqa: E402
from postfix import Postfix  # noqa: E402
from benchlib import cpu_tree  # noqa: E402

BENCH = os.path.join(BUILD, "postseal-bench")
CLI = os.path.join(BUILD, "postseal")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keygen(folder, sel, alg, domain="sender.test"):
    out = subprocess.run([CLI, "keygen", "--domain", domain,
                          "--selector", sel, "--algorithm", alg, "--dir",
                          folder], check=True, capture_output=True,
                         text=True).stdout
    body = out[out.index("("):out.rindex(")") + 1]
    return (os.path.join(folder, f"{domain}.{sel}.key"),
            "".join(re.findall(r'"([^"]*)"', body)))


def zone(records):
    z = ("@ IN SOA ns hostmaster 1 3600 600 86400 300\n@ IN NS ns\n"
         "ns IN A 127.0.0.1\n")
    for owner, text in records:
        parts = [text[i:i + 250] for i in range(0, len(text), 250)]
        z += f"{owner} IN TXT " + " ".join(f'"{p}"' for p in parts) + "\n"
    return z


def run_once(a, b, sink_dir, n, size, timeout):
    """One closed-loop run; returns (seconds, B CPU seconds)."""
    before = metric_value(b.metrics(), "postseal_messages_accepted_total") or 0
    cpu0 = cpu_seconds(b.proc.pid)
    t0 = time.monotonic()
    subprocess.run([BENCH, "send", "--target", f"127.0.0.1:{a.smtp_port}",
                    "--count", str(n), "--connections", "50", "--size",
                    str(size), "--from", "a@sender.test", "--to-domain",
                    "dest.test"], check=True, capture_output=True,
                   timeout=timeout)

    def b_done():
        m = b.metrics()
        acc = metric_value(m, "postseal_messages_accepted_total") or 0
        return acc - before >= n and not b.queue()
    if not wait_until(b_done, timeout, step=0.2):
        raise RuntimeError("B did not take and deliver every message")
    return time.monotonic() - t0, cpu_seconds(b.proc.pid) - cpu0


# ---- Postfix as B --------------------------------------------------------

OPENDKIM = "/usr/sbin/opendkim"
OPENDMARC = "/usr/sbin/opendmarc"
POLICYD_SPF = "/usr/bin/policyd-spf"
UNSHARE = "/usr/bin/unshare"
# OpenDMARC's resolver (libresolv) reads /etc/resolv.conf and asks port 53:
# the Postfix side's nsd also listens on this loopback address, port 53.
DMARC_NS = "127.0.0.153"
# The Postfix side's sender domain: libunbound (OpenDKIM's resolver)
# answers NXDOMAIN for anything under .test itself (a default local-zone,
# RFC 6761) and OpenDKIM 2.11 cannot safely take an unbound.conf to lift it
# (ResolverConfiguration is parsed in several threads at once: "fatal flex
# scanner internal error"); so Postfix B's mail comes from sender.example,
# with the same records.
PF_DOMAIN = "sender.example"
AUTHSERV = "pf.bench.test"
# Runs the packaged policyd-spf with dnspython's default resolver pointed
# at the loopback nsd (policyd-spf has no nameserver setting).
SPF_WRAPPER = """import sys
import dns.resolver
r = dns.resolver.Resolver(configure=False)
r.nameservers = ["127.0.0.1"]
r.port = int(sys.argv[1])
r.timeout, r.lifetime = 1.0, 3.0
dns.resolver.default_resolver = r
sys.argv = ["policyd-spf", sys.argv[2]]
from spf_engine.policyd_spf import main
sys.exit(main())
"""


def postfix_unavailable():
    """Why the Postfix side cannot run here, or None."""
    why = Postfix.unavailable_reason()
    if why:
        return why
    for path, pkg in ((OPENDKIM, "opendkim"), (OPENDMARC, "opendmarc"),
                      (POLICYD_SPF, "postfix-policyd-spf-python"),
                      (UNSHARE, "util-linux")):
        if not os.access(path, os.X_OK):
            return f"{path} missing (apt-get install {pkg})"
    return None


class PfNsd(dnsserver.Nsd):
    """The test nsd, also on DMARC_NS port 53 (for OpenDMARC)."""

    def _write_config(self):
        super()._write_config()
        with open(self.conf) as f:
            text = f.read()
        old = f"  ip-address: 127.0.0.1\n  port: {self.port}\n"
        if old not in text:
            raise RuntimeError("nsd.conf layout changed: cannot add "
                               f"{DMARC_NS}@53")
        text = text.replace(old, f"  ip-address: 127.0.0.1@{self.port}\n"
                            f"  ip-address: {DMARC_NS}@53\n"
                            f"  port: {self.port}\n")
        with open(self.conf, "w") as f:
            f.write(text)


class PostfixB(Postfix):
    """Postfix relaying dest.test to the sink; with policy=(argv) a spawn
    service "policy-spf" running that command as nobody."""

    def __init__(self, policy=None, **kw):
        self.policy = policy
        super().__init__(**kw)

    def _master_cf(self):
        rows = super()._master_cf()
        if self.policy:
            rows += ("policy-spf unix - n n - 0 spawn\n"
                     f"  user=nobody argv={' '.join(self.policy)}\n")
        return rows


def write_file(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def wait_listen(spec, proc, timeout=10.0):
    """True once the milter socket spec (unix:PATH or inet:127.0.0.1:PORT)
    accepts, False if proc exits or time runs out."""
    def up():
        if proc.poll() is not None:
            raise RuntimeError("exited")
        kind, _, addr = spec.partition(":")
        try:
            if kind == "unix":
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(1.0)
                s.connect(addr)
                s.close()
            else:
                socket.create_connection(("127.0.0.1", int(
                    addr.rsplit(":", 1)[1])), 1.0).close()
            return True
        except OSError:
            return False
    try:
        return wait_until(up, timeout, step=0.1)
    except RuntimeError:
        return False


class Milters:
    """OpenDKIM (verify) and OpenDMARC in the foreground, config under
    folder; stop() ends both (bounded)."""

    def __init__(self, folder, ns_port):
        self.folder = folder
        self.procs = []
        self.logs = []
        self.specs = []
        self.od_port, self.odm_port = free_port(), free_port()
        write_file(os.path.join(folder, "opendkim.conf"), (
            "# inbound_checks.py: verify only; A (127.0.0.1) is external\n"
            "Mode v\n"
            f"Socket inet:{self.od_port}@127.0.0.1\n"
            "InternalHosts 192.0.2.1\n"
            f"AuthservID {AUTHSERV}\n"
            # libunbound forwards there (ub_ctx_set_fwd takes ip@port)
            f"Nameservers 127.0.0.1@{ns_port}\n"
            "UserID opendkim\nBackground no\nSyslog no\n"))
        write_file(os.path.join(folder, "ignore.hosts"), "192.0.2.1\n")
        write_file(os.path.join(folder, "resolv.conf"),
                   f"nameserver {DMARC_NS}\noptions timeout:1 attempts:2\n")
        write_file(os.path.join(folder, "opendmarc.conf"), (
            "# inbound_checks.py: DKIM from OpenDKIM's A-R, SPF from\n"
            "# policyd-spf's Received-SPF\n"
            f"Socket inet:{self.odm_port}@127.0.0.1\n"
            f"AuthservID {AUTHSERV}\n"
            f"TrustedAuthservIDs {AUTHSERV}\n"
            f"IgnoreHosts {folder}/ignore.hosts\n"
            "SPFIgnoreResults false\nSPFSelfValidate false\n"
            "RejectFailures true\nFailureReports false\n"
            "RequiredHeaders false\n"
            "UserID opendmarc\nBackground no\nSyslog no\n"))

    def start(self):
        f = self.folder
        self._spawn("opendkim", f"inet:127.0.0.1:{self.od_port}",
                    [OPENDKIM, "-f", "-x", f"{f}/opendkim.conf"])
        self._spawn("opendmarc", f"inet:127.0.0.1:{self.odm_port}", [
            UNSHARE, "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$1" /etc/resolv.conf && exec "$2" -f -c "$3"',
            "sh", f"{f}/resolv.conf", OPENDMARC, f"{f}/opendmarc.conf"])
        return self

    def _spawn(self, name, spec, argv):
        log = os.path.join(self.folder, f"{name}.log")
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log)
        self.specs.append(spec)
        if not wait_listen(spec, proc):
            with open(log, errors="replace") as f:
                tail = f.read()[-600:]
            raise RuntimeError(f"{name} did not listen on {spec}: {tail}")

    def pids(self):
        return [p.pid for p in self.procs]

    def alive(self):
        return all(p.poll() is None for p in self.procs)

    def log_tail(self):
        out = ""
        for log in self.logs:
            with open(log, errors="replace") as f:
                out += f"\n{os.path.basename(log)}: {f.read()[-600:]}"
        return out

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs = []


def pf_cpu(pf, milters):
    """CPU seconds so far of Postfix B: the master's tree plus the
    milters; (total, {part: seconds})."""
    tck = os.sysconf("SC_CLK_TCK")
    parts = {"postfix": cpu_tree(pf.master_pid)[0] / tck}
    if milters is not None:
        for name, pid in zip(("opendkim", "opendmarc"), milters.pids()):
            parts[name] = cpu_tree(pid)[0] / tck
    return sum(parts.values()), parts


def sink_count(sink_dir):
    return len(os.listdir(sink_dir))


def run_once_pf(a, pf, milters, sink_dir, n, size, timeout):
    """One closed-loop run through Postfix B; (seconds, CPU seconds,
    {part: CPU seconds})."""
    got0 = sink_count(sink_dir)
    cpu0, parts0 = pf_cpu(pf, milters)
    t0 = time.monotonic()
    subprocess.run([BENCH, "send", "--target", f"127.0.0.1:{a.smtp_port}",
                    "--count", str(n), "--connections", "50", "--size",
                    str(size), "--from", f"a@{PF_DOMAIN}", "--to-domain",
                    "dest.test"], check=True, capture_output=True,
                   timeout=timeout)

    def done():
        if milters is not None and not milters.alive():
            raise RuntimeError("a milter died during the run: "
                               + milters.log_tail())
        return sink_count(sink_dir) - got0 >= n and not pf.queue_files()
    if not wait_until(done, timeout, step=0.2):
        raise RuntimeError(f"Postfix B did not deliver every message: sink "
                           f"+{sink_count(sink_dir) - got0} of {n}, queue "
                           f"{len(pf.queue_files())}\n{pf.log_tail(15)}")
    secs = time.monotonic() - t0
    cpu1, parts1 = pf_cpu(pf, milters)
    return secs, cpu1 - cpu0, {k: parts1[k] - parts0[k] for k in parts1}


def pf_sample(sink_dir):
    """B's Received-SPF and Authentication-Results in the newest message at
    the sink; raises unless SPF, DKIM and DMARC passed."""
    names = sorted(os.listdir(sink_dir),
                   key=lambda x: os.path.getmtime(os.path.join(sink_dir, x)))
    with open(os.path.join(sink_dir, names[-1]), "rb") as f:
        head = f.read(16000).decode("latin-1")
    head = re.split(r"\r?\n\r?\n", head, maxsplit=1)[0]
    fields = re.findall(r"(?m)^([A-Za-z-]+):(.*(?:\r?\n[ \t].*)*)", head)
    mine = [k + ":" + re.sub(r"\s+", " ", v) for k, v in fields
            if k.lower() == "received-spf" or
            (k.lower() == "authentication-results" and
             v.strip().startswith(AUTHSERV))]
    text = "\n".join(mine)
    if not re.search(r"(?im)^received-spf: pass", text):
        raise RuntimeError(f"no Received-SPF: Pass from B: {text}")
    for want in ("dkim=pass", "dmarc=pass"):
        if want not in text:
            raise RuntimeError(f"no {want} from B: {text}")
    return text


def pf_policy(folder, ns_port):
    """The spawn argv of policyd-spf, its wrapper and config in folder."""
    write_file(os.path.join(folder, "policyd-spf-wrap.py"), SPF_WRAPPER)
    write_file(os.path.join(folder, "policyd-spf.conf"), (
        "debugLevel = 0\n"
        "TestOnly = 1\n"
        "HELO_reject = Fail\n"
        "Mail_From_reject = Fail\n"
        "PermError_reject = False\n"
        "TempError_Defer = False\n"
        # A sends from 127.0.0.1: not skipped (the default skips loopback)
        "skip_addresses = 192.0.2.0/24\n"
        "Header_Type = SPF\n"))
    return ["/usr/bin/python3", f"{folder}/policyd-spf-wrap.py",
            str(ns_port), f"{folder}/policyd-spf.conf"]


def run_postfix(args, tmp, sink_port, sink_dir):
    """The load against Postfix B, checks off then on; the results dict
    part for it. A signs for PF_DOMAIN (RSA-2048 + Ed25519) and resolves
    through the Postfix side's nsd."""
    out = {}
    keydir = os.path.join(tmp, "pf-keys")
    os.makedirs(keydir)
    rsa_key, rsa_rec = keygen(keydir, "r", "rsa", PF_DOMAIN)
    ed_key, ed_rec = keygen(keydir, "e", "ed25519", PF_DOMAIN)
    keys = [f"{PF_DOMAIN} r {rsa_key}", f"{PF_DOMAIN} e {ed_key}"]
    ns = PfNsd({PF_DOMAIN: zone([
        ("@", "v=spf1 ip4:127.0.0.1 -all"), ("r._domainkey", rsa_rec),
        ("e._domainkey", ed_rec), ("_dmarc", "v=DMARC1; p=reject")]),
        "test.example": zone([])}).start()
    dns = (f"dns:\n  servers:\n    - 127.0.0.1:{ns.port}\n"
           "  timeout_ms: 500\n  tries: 2\n")
    folder = tempfile.mkdtemp(prefix="postseal-inbound-pf-", dir="/run")
    os.chmod(folder, 0o755)
    try:
        for mode in ("off", "on"):
            milters = pf = a = None
            extra = (f"myhostname = {AUTHSERV}\n"
                     "mynetworks = 192.0.2.0/24\n"
                     "relay_domains = dest.test\n"
                     "transport_maps = inline:{ dest.test="
                     f"smtp:[127.0.0.1]:{sink_port} }}\n"
                     "default_process_limit = 200\n"
                     "soft_bounce = yes\n")
            policy = None
            if mode == "on":
                policy = pf_policy(folder, ns.port)
                milters = Milters(folder, ns.port).start()
                extra += (
                    "smtpd_recipient_restrictions = "
                    "check_policy_service unix:private/policy-spf\n"
                    "policy-spf_time_limit = 3600s\n"
                    "smtpd_milters = "
                    + " ".join(milters.specs)
                    + "\nmilter_default_action = tempfail\n"
                    "milter_protocol = 6\n")
            try:
                pf = PostfixB(policy=policy, extra=extra).start()
                a = Daemon(extra=(
                    f"transports:\n  - \"dest.test smtp:[127.0.0.1]:"
                    f"{pf.port}\"\n" + dns + "dkim:\n  keys:\n"
                    + "".join(f"    - \"{k}\"\n" for k in keys)))
                a.start()
                for f in glob.glob(os.path.join(sink_dir, "*")):
                    os.unlink(f)
                run_once_pf(a, pf, milters, sink_dir, min(1000, args.n),
                            args.size, args.timeout)  # warm-up
                if mode == "on":
                    out["sample"] = pf_sample(sink_dir)
                runs = []
                for _ in range(args.reps):
                    secs, cpu, parts = run_once_pf(a, pf, milters, sink_dir,
                                                   args.n, args.size,
                                                   args.timeout)
                    runs.append({"seconds": secs, "msg_per_s": args.n / secs,
                                 "cpu_ms_per_msg": cpu * 1000 / args.n,
                                 "cpu_ms_per_msg_parts": {
                                     k: v * 1000 / args.n
                                     for k, v in parts.items()}})
                    print(f"postfix {mode}: {args.n / secs:,.0f} msg/s, B "
                          f"CPU {cpu * 1000 / args.n:.3f} ms/msg",
                          file=sys.stderr)
                problems = [x for x in pf.log_problems()
                            if "NIS domain name" not in x]
                if problems:
                    out.setdefault("log_problems", []).extend(problems[:5])
                out[mode] = runs
            finally:
                if a is not None:
                    a.stop()
                    a.cleanup()
                if pf is not None:
                    pf.cleanup()
                if milters is not None:
                    milters.stop()
    finally:
        ns.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--out")
    ap.add_argument("--no-postfix", action="store_true",
                    help="postseald only: skip the Postfix B runs")
    args = ap.parse_args()
    if not args.no_postfix:
        why = postfix_unavailable()
        if why:
            print(f"inbound_checks: Postfix side: {why} (or --no-postfix)",
                  file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp(prefix="postseal-inbound-checks-")
    ns = sink = None
    results = {}
    try:
        rsa_key, rsa_rec = keygen(tmp, "r", "rsa")
        ed_key, ed_rec = keygen(tmp, "e", "ed25519")
        ns = dnsserver.Nsd({"sender.test": zone([
            ("@", "v=spf1 ip4:127.0.0.1 -all"), ("r._domainkey", rsa_rec),
            ("e._domainkey", ed_rec), ("_dmarc", "v=DMARC1; p=reject")]),
            # A's HELO name (harness hostname mx.test.example): an answer,
            # cached like any real HELO name's, not a refusal every time.
            "test.example": zone([])}).start()
        sink_port = free_port()
        sink_dir = os.path.join(tmp, "sink")
        os.makedirs(sink_dir)
        sink = subprocess.Popen(
            [BENCH, "sink", "--listen", f"127.0.0.1:{sink_port}",
             "--duration", "3600", "--write-dir", sink_dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        dns = (f"dns:\n  servers:\n    - 127.0.0.1:{ns.port}\n"
               "  timeout_ms: 500\n  tries: 2\n")
        for mode in ("off", "on"):
            checks = ("" if mode == "on" else
                      "spf:\n  enabled: false\ndmarc:\n  enabled: false\n")
            verify = "true" if mode == "on" else "false"
            b = Daemon(mynetworks=["192.0.2.0/24"], extra=(
                "relay_domains: [dest.test]\n"
                f"transports:\n  - \"dest.test smtp:[127.0.0.1]:{sink_port}\"\n"
                + dns + checks + f"dkim:\n  verify: {verify}\n"))
            b.start()
            a = Daemon(extra=(
                f"transports:\n  - \"dest.test smtp:[127.0.0.1]:{b.smtp_port}\"\n"
                + dns + "dkim:\n  keys:\n"
                f"    - \"sender.test r {rsa_key}\"\n"
                f"    - \"sender.test e {ed_key}\"\n"))
            a.start()
            try:
                for f in glob.glob(os.path.join(sink_dir, "*")):
                    os.unlink(f)
                run_once(a, b, sink_dir, min(1000, args.n), args.size,
                         args.timeout)  # warm-up: caches, connections
                if mode == "on":
                    sample = sorted(glob.glob(os.path.join(sink_dir, "*")))
                    with open(sample[-1], "rb") as f:
                        head = f.read(4000).decode("latin-1")
                    ar = re.sub(r"\s+", " ", head.split("Received:")[0])
                    for want in ("spf=pass", "dmarc=pass"):
                        if want not in ar:
                            raise RuntimeError(f"checks not seen: {ar}")
                    if ar.count("dkim=pass") != 2:
                        raise RuntimeError(f"two DKIM passes not seen: {ar}")
                    results["sample"] = ar.strip()
                runs = []
                for _ in range(args.reps):
                    secs, cpu = run_once(a, b, sink_dir, args.n, args.size,
                                         args.timeout)
                    runs.append({"seconds": secs, "msg_per_s": args.n / secs,
                                 "cpu_ms_per_msg": cpu * 1000 / args.n})
                    print(f"{mode}: {args.n / secs:,.0f} msg/s, B CPU "
                          f"{cpu * 1000 / args.n:.3f} ms/msg", file=sys.stderr)
                results[mode] = runs
            finally:
                a.stop()
                b.stop()
                a.cleanup()
                b.cleanup()
        if not args.no_postfix:
            try:
                results["postfix"] = run_postfix(args, tmp, sink_port,
                                                 sink_dir)
            except Exception as e:  # the postseald figures still stand
                results["postfix_error"] = str(e)[-2000:]
                print(f"Postfix side failed: {e}", file=sys.stderr)
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=30)
        if ns is not None:
            ns.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(mode, key, res=results):
        v = sorted(r[key] for r in res[mode])
        return v[len(v) // 2], v[0], v[-1]
    off_r, on_r = med("off", "msg_per_s"), med("on", "msg_per_s")
    off_c, on_c = med("off", "cpu_ms_per_msg"), med("on", "cpu_ms_per_msg")
    out = args.out or os.path.join(
        HERE, "results", f"inbound-checks-{time.strftime('%Y-%m-%d')}.md")
    rev = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    with open(out, "w") as f:
        f.write(f"""# Inbound checks: SPF + DKIM verify + DMARC on vs off — {time.strftime('%Y-%m-%d %H:%MZ', time.gmtime())}

Generated by `bench/inbound_checks.py -n {args.n} --size {args.size} --reps {args.reps}` at postseald {rev}; {os.cpu_count()} CPUs, loopback.

Path: postseal-bench send (50 connections, one {args.size}-byte message each, closed loop) → postseald A (trusted: dual-signs with RSA-2048 + Ed25519 for sender.test) → postseald B (A is an outside client) → postseal-bench sink. nsd on loopback serves sender.test's SPF, DKIM keys and DMARC (p=reject); B's DNS cache is warm (a {min(1000, args.n)}-message warm-up first). B's CPU = user+system of its process from the start of a run until its queue is empty, / N. A shares the cores, so msg/s is a lower bound for B.

| B's checks | msg/s, median (min–max) | B CPU ms/msg, median (min–max) |
| --- | ---: | ---: |
| off | {off_r[0]:,.0f} ({off_r[1]:,.0f}–{off_r[2]:,.0f}) | {off_c[0]:.3f} ({off_c[1]:.3f}–{off_c[2]:.3f}) |
| SPF + DKIM verify (2 signatures) + DMARC | {on_r[0]:,.0f} ({on_r[1]:,.0f}–{on_r[2]:,.0f}) | {on_c[0]:.3f} ({on_c[1]:.3f}–{on_c[2]:.3f}) |

Checks on cost {on_c[0] - off_c[0]:.3f} ms of CPU per message ({on_c[0] / off_c[0]:.2f}× B's CPU with them off); msg/s ratio on/off {on_r[0] / off_r[0]:.2f}.

Sample Authentication-Results written by B (checks on):

```
{results.get('sample', '')}
```
{postfix_section(args, results, med)}
Per run (JSON): `{json.dumps(results)}`
""")
    print(json.dumps({"off": results["off"], "on": results["on"],
                      "postfix": results.get("postfix"), "out": out}))
    return 1 if "postfix_error" in results else 0


def postfix_section(args, results, med):
    """The report's Postfix comparison (empty with --no-postfix)."""
    if args.no_postfix:
        return ""
    if "postfix_error" in results:
        return ("\n## Against Postfix 3.7\n\nNot measured: the Postfix "
                f"side failed:\n\n```\n{results['postfix_error']}\n```\n")
    pf = results["postfix"]
    rows = ""
    for mode, label in (("off", "off"),
                        ("on", "SPF + DKIM verify + DMARC")):
        r, c = med(mode, "msg_per_s"), med(mode, "cpu_ms_per_msg")
        pr = med(mode, "msg_per_s", pf)
        pc = med(mode, "cpu_ms_per_msg", pf)
        rows += (f"| {label} | {r[0]:,.0f} | {pr[0]:,.0f} ({pr[1]:,.0f}–"
                 f"{pr[2]:,.0f}) | **{r[0] / pr[0]:.2f}** | {c[0]:.3f} | "
                 f"{pc[0]:.3f} ({pc[1]:.3f}–{pc[2]:.3f}) | "
                 f"**{pc[0] / c[0]:.2f}** |\n")
    on = sorted(pf["on"], key=lambda x: x["cpu_ms_per_msg"])
    parts = on[len(on) // 2]["cpu_ms_per_msg_parts"]
    split = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
    off_c, on_c = med("off", "cpu_ms_per_msg", pf), med("on", "cpu_ms_per_msg", pf)
    probs = "".join(f"\n    {x}" for x in pf.get("log_problems", []))
    return f"""
## Against Postfix 3.7 (same load, same run)

Path: the same send → postseald A → **Postfix B** → the same sink, same N, size and connections; the sender domain is {PF_DOMAIN} (own keys, the same records as sender.test: libunbound, OpenDKIM's resolver, answers NXDOMAIN itself for .test names); A is an outside client of B (mynetworks 192.0.2.0/24), B relays dest.test to the sink (transport_maps). Checks on: SPF by postfix-policyd-spf-python (spawn(8) service, check_policy_service in smtpd_recipient_restrictions, adds Received-SPF), DKIM verification by OpenDKIM (Mode v, milter) and DMARC by OpenDMARC (milter after OpenDKIM, from OpenDKIM's Authentication-Results and the Received-SPF header; p=reject enforced: RejectFailures). Checks off: the same instance without the policy service and milters. DNS: a second nsd on loopback (policyd-spf: dnspython's default resolver set to it by a wrapper; OpenDKIM: Nameservers 127.0.0.1@port; OpenDMARC: libresolv in a private mount namespace whose bind-mounted resolv.conf names {DMARC_NS}, where the nsd also listens on port 53). Postfix CPU = every process of the instance: the master's tree (smtpd, cleanup, qmgr, smtp, trivial-rewrite, postlogd, the policy daemons; exited ones through the master's cutime/cstime) + OpenDKIM + OpenDMARC, /proc before and after each run, / N. Medians of {args.reps} runs; postseald columns repeat the table above.

| B's checks | postseald msg/s | Postfix msg/s, median (min–max) | msg/s postseald/Postfix | postseald CPU ms/msg | Postfix CPU ms/msg, median (min–max) | CPU Postfix/postseald |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{rows}
Postfix with checks on, CPU ms/msg by part (median run): {split} (postfix = the master's tree, including policyd-spf: one Python process per smtpd process, which Postfix replaces after max_use = 100 sessions). Checks on cost Postfix {on_c[0] - off_c[0]:.3f} ms of CPU per message ({on_c[0] / off_c[0]:.2f}× its CPU with them off).

Sample Received-SPF and Authentication-Results written by Postfix B (checks on):

```
{pf.get('sample', '')}
```
{"Postfix log warnings/errors (first lines):" + probs if probs else ""}
"""


if __name__ == "__main__":
    sys.exit(main())
