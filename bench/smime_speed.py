#!/usr/bin/python3
"""S/MIME cost per 4 KiB message: postseal against `openssl cms`.

Makes a test CA, a signer (RSA-2048) and ten recipients (RSA-2048) with
the openssl CLI, then measures, for sign, encrypt to 1, encrypt to 10
and sign+encrypt (AES-256-GCM, multipart/signed inside):

  postseal in process   `postseal-bench smime-speed`: CPU ms per message
                        on one thread (crypto/smime.h, what the gateway
                        stage runs inside postseald);
  openssl cms           one `openssl cms` process per message (what a
                        content filter running the CLI does), CPU ms per
                        message from the children's rusage, and the same
                        minus the CPU of starting `openssl version` (an
                        estimate of its crypto work alone);
  postseal CLI          one `postseal smime ...` process per message, the
                        same way, so the process-per-message rows compare
                        like with like.

With --relay, the gateway stage inside postseald: `postseal-bench send`
(50 sessions, --relay-n messages of --size octets from bench@example.org
to rcpt0@dest.test) → postseald → `postseal-bench sink`, with no smime
section, then signing, then signing and encrypting to the recipient
(and the sender): msg/s end to end and postseald's CPU per message; a
sample of what reached the sink is checked to be what the mode promises.

Bounded: --n messages per process-per-message case (default 200),
--seconds of CPU per in-process phase (default 2), --relay-n messages per
relay run (default 5000, 3 runs per mode, each within --timeout).

  bench/smime_speed.py [--build DIR] [--n N] [--size OCTETS] [--seconds S]
                       [--relay [--relay-n N]]
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
from smimepki import Pki  # noqa: E402


def message(size):
    head = ("From: Bench <bench@example.org>\r\nTo: <rcpt@bench.example>\r\n"
            "Subject: smime bench\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"the quick brown fox jumps over the lazy dog and more text " \
           b"to protect here\r\n"
    body = (line * (size // len(line) + 1))[:max(0, size - len(head) - 2)]
    return head + body + b"\r\n"


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def per_process(n, argv_for, stdin_path):
    """CPU ms per message of n runs of the command argv_for(i) (a list of
    argv lists run in sequence, piping each into the next)."""
    t0 = children_cpu()
    for i in range(n):
        data = None
        with open(stdin_path, "rb") as f:
            data = f.read()
        for argv in argv_for(i):
            p = subprocess.run(argv, input=data, capture_output=True,
                               timeout=60)
            if p.returncode != 0:
                sys.exit(f"{' '.join(argv)}: {p.stderr.decode()[:300]}")
            data = p.stdout
    return (children_cpu() - t0) * 1000.0 / n


def relay_runs(a, pki, signer, rcpt):
    """msg/s and postseald CPU ms per message for each gateway mode."""
    os.environ["POSTSEAL_BUILD"] = a.build
    from harness import Daemon, metric_value, wait_until, free_port
    from benchlib import cpu_proc
    bench = os.path.join(a.build, "postseal-bench")
    tick = os.sysconf("SC_CLK_TCK")
    certs = os.path.join(pki.dir, "certs")
    os.makedirs(certs, exist_ok=True)
    shutil.copy(rcpt[1], certs)
    shutil.copy(signer[1], certs)
    sink_dir = os.path.join(pki.dir, "sink")
    os.makedirs(sink_dir)
    sink_port = free_port()
    sink = subprocess.Popen([bench, "sink", "--listen",
                             f"127.0.0.1:{sink_port}", "--duration", "3600",
                             "--write-dir", sink_dir],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    modes = {
        "off": "",
        "sign": (f"smime:\n  sign: [\"example.org {signer[0]} "
                 f"{signer[1]}\"]\n"),
        "sign+encrypt": (f"smime:\n  sign: [\"example.org {signer[0]} "
                         f"{signer[1]}\"]\n  certs: {certs}\n"
                         "  encrypt: required\n"),
    }
    want = {"off": "Subject: postseal-bench", "sign": "multipart/signed",
            "sign+encrypt": "authEnveloped-data"}
    out = {}
    try:
        for mode, extra in modes.items():
            d = Daemon(extra=(f"transports:\n  - \"dest.test smtp:"
                              f"[127.0.0.1]:{sink_port}\"\n" + extra))
            d.start()
            try:
                def run(n):
                    before = metric_value(
                        d.metrics(), "postseal_messages_accepted_total") or 0
                    c0, t0 = cpu_proc(d.proc.pid), time.monotonic()
                    subprocess.run(
                        [bench, "send", "--target",
                         f"127.0.0.1:{d.smtp_port}", "--count", str(n),
                         "--connections", "50", "--size", str(a.size),
                         "--from", "bench@example.org", "--to-domain",
                         "dest.test"], check=True, capture_output=True,
                        timeout=a.timeout)

                    def done():
                        acc = metric_value(
                            d.metrics(),
                            "postseal_messages_accepted_total") or 0
                        return acc - before >= n and not d.queue()
                    if not wait_until(done, a.timeout, step=0.2):
                        sys.exit(f"{mode}: not every message was relayed")
                    secs = time.monotonic() - t0
                    cpu = (cpu_proc(d.proc.pid) - c0) / tick
                    return n / secs, cpu * 1000.0 / n
                for f in os.listdir(sink_dir):
                    os.unlink(os.path.join(sink_dir, f))
                run(min(500, a.relay_n))  # warm-up, and a sample
                sample = sorted(os.listdir(sink_dir))
                with open(os.path.join(sink_dir, sample[-1]), "rb") as f:
                    text = f.read().decode("latin-1")
                if want[mode] not in text or (
                        mode == "off" and "pkcs7" in text):
                    sys.exit(f"{mode}: the sink got no {want[mode]} message")
                for f in os.listdir(sink_dir):
                    os.unlink(os.path.join(sink_dir, f))
                runs = [run(a.relay_n) for _ in range(3)]
                runs.sort(key=lambda r: r[1])
                out[mode] = runs[1]
            finally:
                d.stop()
                d.cleanup()
    finally:
        sink.terminate()
        sink.wait(timeout=10)
    print(f"# through postseald: postseal-bench send, 50 sessions, "
          f"{a.relay_n} messages of {a.size} octets per run, median of 3; "
          f"{os.cpu_count()} cores; RSA-2048 signer, RSA-2048 recipient")
    print(f"{'mode':<14}{'msg/s':>10}{'CPU ms/msg':>12}{'+ms/msg':>10}")
    for mode, (rate, cpu) in out.items():
        print(f"{mode:<14}{rate:>10.0f}{cpu:>12.3f}"
              f"{cpu - out['off'][1]:>10.3f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get(
        "POSTSEAL_BUILD", os.path.join(HERE, "..", "build")))
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--relay", action="store_true")
    ap.add_argument("--relay-n", type=int, default=5000)
    ap.add_argument("--timeout", type=int, default=600)
    a = ap.parse_args()
    a.build = os.path.abspath(a.build)
    if not 1 <= a.relay_n <= 1000000:
        sys.exit("--relay-n out of range (1..1000000)")
    if not 1 <= a.n <= 10000:
        sys.exit("--n out of range (1..10000)")
    bench = os.path.join(a.build, "postseal-bench")
    cli = os.path.join(a.build, "postseal")
    tmp = tempfile.mkdtemp(prefix="postseal-smime-speed-")
    try:
        pki = Pki(os.path.join(tmp, "pki"))
        key, crt = pki.person("bench@example.org")
        rcpts = [pki.person("rcpt0@dest.test")] + [
            pki.person(f"r{i}@bench.example") for i in range(1, 10)]
        msg = os.path.join(tmp, "msg.eml")
        with open(msg, "wb") as f:
            f.write(message(a.size))
        argv = [bench, "smime-speed", "--key", key, "--cert", crt,
                "--rcpt-key", rcpts[0][0], "--size", str(a.size),
                "--seconds", str(a.seconds)]
        for _, c in rcpts:
            argv += ["--rcpt", c]
        out = subprocess.run(argv, capture_output=True, text=True,
                             timeout=a.seconds * 40 + 60)
        if out.returncode != 0:
            sys.exit(f"smime-speed: {out.stderr}")
        inproc = {}
        for line in out.stdout.splitlines():
            if "phase=" in line:
                kv = dict(w.split("=", 1) for w in line.split()[1:])
                inproc[kv["phase"]] = float(kv["cpu_ms_per_msg"])
        one = [rcpts[0][1]]
        ten = [c for _, c in rcpts]
        osl = {
            "sign": lambda i: [["openssl", "cms", "-sign", "-signer", crt,
                                "-inkey", key]],
            "encrypt-1": lambda i: [["openssl", "cms", "-encrypt",
                                     "-aes-256-gcm", *one]],
            "encrypt-N": lambda i: [["openssl", "cms", "-encrypt",
                                     "-aes-256-gcm", *ten]],
            "sign+encrypt": lambda i: [
                ["openssl", "cms", "-sign", "-signer", crt, "-inkey", key],
                ["openssl", "cms", "-encrypt", "-aes-256-gcm", *one]],
        }
        ps = {
            "sign": lambda i: [[cli, "smime", "sign", "--key", key,
                                "--cert", crt]],
            "encrypt-1": lambda i: [[cli, "smime", "encrypt",
                                     *sum((["--to", c] for c in one), [])]],
            "encrypt-N": lambda i: [[cli, "smime", "encrypt",
                                     *sum((["--to", c] for c in ten), [])]],
            "sign+encrypt": lambda i: [
                [cli, "smime", "sign", "--key", key, "--cert", crt],
                [cli, "smime", "encrypt",
                 *sum((["--to", c] for c in one), [])]],
        }
        start = per_process(a.n, lambda i: [["openssl", "version"]], msg)
        print(f"# S/MIME per message, {a.size}-octet message, RSA-2048 "
              f"keys, AES-256-GCM; {os.cpu_count()} cores; N={a.n} per "
              f"process row; encrypt-N = 10 recipients")
        print(f"# starting `openssl version` costs {start:.3f} ms CPU")
        print(f"{'case':<14}{'postseal':>10}{'openssl':>10}{'openssl-':>10}"
              f"{'ratio':>8}{'CLI':>10}{'CLI/osl':>9}")
        print(f"{'':<14}{'in-proc':>10}{'cms/proc':>10}{'start':>10}"
              f"{'':>8}{'per proc':>10}{'':>9}")
        for case in ("sign", "encrypt-1", "encrypt-N", "sign+encrypt"):
            o = per_process(a.n, osl[case], msg)
            c = per_process(a.n, ps[case], msg)
            starts = len(osl[case](0))
            work = max(o - start * starts, 0.001)
            print(f"{case:<14}{inproc[case]:>10.3f}{o:>10.3f}{work:>10.3f}"
                  f"{work / inproc[case]:>7.1f}x{c:>10.3f}"
                  f"{o / c:>8.2f}x")
        print("# ratio = (openssl cms CPU minus its start) / postseal "
              "in-process CPU; CLI/osl = openssl cms / postseal CLI, "
              "process per message both")
        if a.relay:
            sys.path.insert(0, HERE)
            relay_runs(a, pki, (key, crt), rcpts[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
