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

  bench/inbound_checks.py [-n 10000] [--size 4096] [--reps 3]
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
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
os.environ.setdefault("POSTSEAL_BUILD", os.path.join(HERE, "..", "build"))
from harness import BUILD, Daemon, free_port, metric_value, wait_until  # noqa
import dnsserver  # noqa: E402

BENCH = os.path.join(BUILD, "postseal-bench")
CLI = os.path.join(BUILD, "postseal")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keygen(folder, sel, alg):
    out = subprocess.run([CLI, "keygen", "--domain", "sender.test",
                          "--selector", sel, "--algorithm", alg, "--dir",
                          folder], check=True, capture_output=True,
                         text=True).stdout
    body = out[out.index("("):out.rindex(")") + 1]
    return (os.path.join(folder, f"sender.test.{sel}.key"),
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--out")
    args = ap.parse_args()
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
    finally:
        if sink is not None:
            sink.terminate()
            sink.wait(timeout=30)
        if ns is not None:
            ns.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    def med(mode, key):
        v = sorted(r[key] for r in results[mode])
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

Per run (JSON): `{json.dumps(results)}`
""")
    print(json.dumps({"off": results["off"], "on": results["on"],
                      "out": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
