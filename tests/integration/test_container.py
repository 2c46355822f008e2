"""Container image (issue 9): deploy/Containerfile builds with podman, the
entrypoint writes postseald's configuration from the environment (the
POSTSEAL_* variables and the boky/postfix aliases), the container relays
mail to a sink through RELAYHOST, signs it with a DKIM key it made on
first start, serves /metrics and passes its health check, and a SIGTERM in
the middle of a load loses nothing: every message acknowledged with 250
reaches the sink after the container is started again on the same volume.

Runs only where podman is installed; without it the test says so and
exits 0 (scripts/container-test.sh installs podman and runs this test).
The base image is BASE (POSTSEAL_CONTAINER_BASE), by default one made
locally with debootstrap and kept in podman's image store; the recipe for
this machine (runc, cgroupfs, explicit --ulimit values, --network=host) is in
docs/deploy.md. Every listener is on 127.0.0.1; the sink too."""

import json
import os
import shutil
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SOURCE, SmtpSink, _closed_udp_port, check,  # noqa: E402
                     free_port, metric_value, run_tests, wait_until)

BASE = os.environ.get("POSTSEAL_CONTAINER_BASE",
                      "localhost/debian-base:bookworm")
IMAGE = os.environ.get("POSTSEAL_CONTAINER_IMAGE", "localhost/postseal:test")
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
SECCOMP = os.path.join(SOURCE, "deploy", "seccomp", "postseald.json")



def _ulimits():
    """Explicit limits within this process's own: on this machine podman's
    defaults and `--ulimit host` ask for more than the hard limits, and
    runc may not raise them (no CAP_SYS_RESOURCE)."""
    import resource
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nofile = 16384 if nofile == resource.RLIM_INFINITY else min(nofile, 16384)
    return ["--ulimit", f"nofile={nofile}:{nofile}",
            "--ulimit", "nproc=4096:4096"]


ULIMITS = _ulimits()
RUN = ["run", *ULIMITS, "--network=host",
       "--security-opt", f"seccomp={SECCOMP}"]
TAG = f"{os.getpid()}"
_cleanup = []


def podman(*args, timeout=600, check_rc=True):
    r = subprocess.run(PODMAN + list(args), capture_output=True, text=True,
                       timeout=timeout)
    if check_rc and r.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}: rc "
                             f"{r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def ensure_base():
    """The debootstrap base image, made once and kept in the image store."""
    if podman("image", "exists", BASE, check_rc=False).returncode == 0:
        return
    check(BASE.startswith("localhost/"),
          f"base image {BASE} is present (pull it first)")
    check(shutil.which("debootstrap") is not None,
          "debootstrap is installed (scripts/container-test.sh)")
    root = tempfile.mkdtemp(prefix="postseal-rootfs-")
    try:
        r = subprocess.run(["debootstrap", "--variant=minbase", "bookworm",
                            root], capture_output=True, text=True,
                           timeout=900)
        check(r.returncode == 0, f"debootstrap: {r.stderr[-2000:]}")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."],
                               stdout=subprocess.PIPE)
        r = subprocess.run(PODMAN + ["import", "-", BASE], stdin=tar.stdout,
                           capture_output=True, text=True, timeout=600)
        tar.wait()
        check(r.returncode == 0, f"podman import: {r.stderr}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def build_image():
    """Builds IMAGE from the source tree (layers cached between runs)."""
    if os.environ.get("POSTSEAL_CONTAINER_IMAGE"):
        check(podman("image", "exists", IMAGE, check_rc=False).returncode
              == 0, f"POSTSEAL_CONTAINER_IMAGE {IMAGE} exists")
        return
    ensure_base()
    start = time.monotonic()
    podman("build", "--isolation=chroot", "--network=host", "--format",
           "docker", "--build-arg", f"BASE={BASE}", "-t", IMAGE, "-f",
           os.path.join(SOURCE, "deploy", "Containerfile"), SOURCE,
           timeout=1800)
    print(f"built {IMAGE} in {time.monotonic() - start:.0f}s")


def inspect_image():
    return json.loads(podman("image", "inspect", IMAGE).stdout)[0]


def volume():
    name = f"postseal-test-{TAG}-{len(_cleanup)}"
    podman("volume", "create", name)
    _cleanup.append(("volume", name))
    return name


class Container:
    """One detached postseald container on the host network."""

    def __init__(self, env, vol):
        self.smtp = free_port()
        self.submission = free_port()
        self.metrics = free_port()
        self.env = {
            "POSTSEAL_SMTP_LISTEN": f"127.0.0.1:{self.smtp}",
            "POSTSEAL_SUBMISSION_LISTEN": f"127.0.0.1:{self.submission}",
            "POSTSEAL_METRICS_LISTEN": f"127.0.0.1:{self.metrics}",
            # No lookup leaves the machine: DNS to a closed loopback port.
            "POSTSEAL_DNS_SERVERS": f"127.0.0.1:{_closed_udp_port()}",
            "POSTSEAL_THREADS": "2",
            "MYNETWORKS": "127.0.0.0/8",
        }
        self.env.update(env)
        self.vol = vol
        self.name = None
        self.starts = 0

    def start(self):
        self.name = f"postseal-test-{TAG}-{len(_cleanup)}"
        args = ["--detach", "--name", self.name, "-v",
                f"{self.vol}:/var/lib/postseal"]
        for k, v in self.env.items():
            args += ["-e", f"{k}={v}"]
        podman(*RUN, *args, IMAGE)
        _cleanup.append(("container", self.name))
        self.starts += 1
        ok = wait_until(lambda: "postseald ready" in self.logs() or
                        not self.running(), 60, 0.2)
        if not (ok and self.running()):
            raise AssertionError(f"container did not start:\n{self.logs()}")
        return self

    def logs(self):
        r = podman("logs", self.name, check_rc=False)
        return r.stdout + r.stderr

    def running(self):
        r = podman("inspect", "--format", "{{.State.Running}}", self.name,
                   check_rc=False)
        return r.stdout.strip() == "true"

    def stop(self, grace=30):
        """SIGTERM (the image's STOPSIGNAL), wait; returns the exit code."""
        podman("stop", "-t", str(grace), self.name, timeout=grace + 30)
        r = podman("inspect", "--format", "{{.State.ExitCode}}", self.name)
        return int(r.stdout.strip())

    def metrics_text(self):
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()


def message(token, sender="app@example.org"):
    return (f"From: {sender}\r\nTo: user@example.net\r\n"
            f"Subject: container test {token}\r\nX-Token: {token}\r\n\r\n"
            f"token {token}\r\n" + ("x" * 76 + "\r\n") * 40).encode()


def sink_tokens(sink):
    with sink.lock:
        msgs = list(sink.messages)
    out = []
    for _, _, data in msgs:
        for line in data.split(b"\r\n"):
            if line.startswith(b"X-Token: "):
                out.append(line[9:].decode())
                break
    return out


def test_image():
    img = inspect_image()
    cfg = img["Config"]
    size = img["Size"]
    check(cfg.get("User") == "10025:10025", f"non-root: {cfg.get('User')}")
    check("/var/lib/postseal" in (cfg.get("Volumes") or {}),
          f"spool volume: {cfg.get('Volumes')}")
    health = img.get("Healthcheck") or cfg.get("Healthcheck") or {}
    check(health.get("Test", [])[-1:] == ["healthcheck"],
          f"health check: {health}")
    check(cfg.get("StopSignal") == "SIGTERM", f"{cfg.get('StopSignal')}")
    base = json.loads(podman("image", "inspect", BASE).stdout)[0]["Size"] \
        if podman("image", "exists", BASE, check_rc=False).returncode == 0 \
        else 0
    print(f"image {IMAGE}: {size / 1e6:.1f} MB, {(size - base) / 1e6:.1f} MB "
          f"above the base {BASE}")
    check(not base or size - base < 60e6,
          f"runtime layers under 60 MB: {(size - base) / 1e6:.0f} MB")
    r = podman("run", "--rm", *ULIMITS, "--entrypoint", "sh",
               IMAGE, "-c", "command -v cc gcc cmake || echo none")
    check(r.stdout.strip() == "none", f"no compiler at run time: {r.stdout}")


def test_config_from_environment():
    secret = tempfile.NamedTemporaryFile("w", delete=False, suffix=".txt")
    secret.write("[192.0.2.7]:2525\n")
    secret.close()
    os.chmod(secret.name, 0o644)
    _cleanup.append(("file", secret.name))
    base = ["run", "--rm", *ULIMITS, "--network=none"]
    r = podman(*base, "-e", "MYNETWORKS=10.0.0.0/8 [fd00::]/8, 192.168.1.5",
               "-e", "LOG_FORMAT=json", "-e", "RELAYHOST_FILE=/run/relayhost",
               "-v", f"{secret.name}:/run/relayhost:ro", IMAGE,
               "check-config", check_rc=False)
    out = r.stdout
    check(r.returncode == 0, f"check-config: rc {r.returncode}: {r.stderr}")
    for want in ("smtp: 0.0.0.0:2525", "submission: 0.0.0.0:2587",
                 "metrics: 0.0.0.0:9425", 'relayhost: "[192.0.2.7]:2525"',
                 'log_format: "json"', '- "10.0.0.0/8"', '- "fd00::/8"',
                 '- "192.168.1.5/32"', "spool_dir: /var/lib/postseal/spool"):
        check(want in out, f"config has {want!r}:\n{out}")
    # What postseald cannot do is refused, not faked.
    r = podman(*base, "-e", "RELAYHOST=[192.0.2.7]:587", "-e",
               "RELAYHOST_USERNAME=u", "-e", "RELAYHOST_PASSWORD=p", IMAGE,
               "check-config", check_rc=False)
    check(r.returncode != 0 and "cannot authenticate" in r.stderr,
          f"relayhost credentials refused: rc {r.returncode} {r.stderr}")
    check("p\n" not in r.stderr, "the password is not logged")
    r = podman(*base, "-e", "RELAYHOST=a", "-e", "RELAYHOST_FILE=/x", IMAGE,
               "check-config", check_rc=False)
    check(r.returncode != 0 and "both set" in r.stderr,
          f"VAR and VAR_FILE together refused: {r.stderr}")
    r = podman(*base, "-e", "POSTSEAL_MYNETWORKS=10.0.0.1/8", IMAGE,
               "check-config", check_rc=False)
    check(r.returncode != 0 and "POSTSEAL_MYNETWORKS" in r.stdout + r.stderr,
          f"postseald checks the POSTSEAL_* variables: {r.stderr}")


def test_relay_dkim_metrics_health():
    sink = SmtpSink().start()
    c = Container({"RELAYHOST": f"[127.0.0.1]:{sink.port}",
                   "ALLOWED_SENDER_DOMAINS": "example.org",
                   "DKIM_SELECTOR": "s2026", "DKIM_AUTOGENERATE": "true"},
                  volume())
    try:
        c.start()
        logs = c.logs()
        check("s2026._domainkey.example.org" in logs and "p=" in logs,
              f"the DKIM TXT record is logged:\n{logs[-3000:]}")
        with smtplib.SMTP("127.0.0.1", c.smtp, timeout=30) as s:
            for i in range(5):
                s.sendmail("app@example.org", ["user@example.net"],
                           message(f"r{i}"))
        check(wait_until(lambda: sink.count() >= 5, 60),
              f"5 messages reach the sink: got {sink.count()}")
        data = sink.messages[0][2].decode("utf-8", "replace")
        check("d=example.org" in data and "s=s2026" in data,
              f"DKIM-signed with the made key:\n{data[:1500]}")
        text = c.metrics_text()
        acc = metric_value(text, "postseal_messages_accepted_total")
        check(acc is not None and acc >= 5,
              f"metrics count 5 accepted: got {acc}")
        r = podman("healthcheck", "run", c.name, check_rc=False)
        check(r.returncode == 0, f"health check passes: {r.stdout}"
              f"{r.stderr}")
        check(c.stop() == 0, "exit 0 on SIGTERM")
        # The key stays in the volume: no second key on the next start.
        c.start()
        check(c.logs().count("made DKIM key") == 0,
              "the key is reused on restart")
        c.stop()
    finally:
        sink.stop()


def test_sigterm_mid_load_loses_nothing():
    """4 threads send 200 messages in all; SIGTERM after 60 are
    acknowledged. Every acknowledged token must reach the sink once the
    container runs again on the same volume."""
    sink = SmtpSink(delay=0.15).start()  # slow next hop: mail queues up
    c = Container({"RELAYHOST": f"[127.0.0.1]:{sink.port}"}, volume())
    acked, lock = set(), threading.Lock()
    stop = threading.Event()

    def sender(n):
        tokens = [f"t{n}-{i}" for i in range(50)]
        s = None
        for tok in tokens:
            if stop.is_set():
                break
            try:
                if s is None:
                    s = smtplib.SMTP("127.0.0.1", c.smtp, timeout=30)
                s.sendmail("app@example.org", ["user@example.net"],
                           message(tok))
                with lock:
                    acked.add(tok)
            except (smtplib.SMTPException, OSError):
                s = None
                if stop.is_set():
                    break
                time.sleep(0.05)
        if s is not None:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass

    try:
        c.start()
        threads = [threading.Thread(target=sender, args=(n,))
                   for n in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 60, 60, 0.01)
        at_stop = len(acked)
        check(at_stop >= 60, f"60 messages acknowledged before the SIGTERM: "
              f"got {at_stop}")
        delivered_at_stop = sink.count()
        rc = c.stop()
        stop.set()
        for t in threads:
            t.join(60)
        check(rc == 0, f"postseald exits 0 after the drain: got {rc}")
        check("draining" in c.logs(), "the drain is logged")
        pending = subprocess.run(
            PODMAN + ["run", "--rm", *ULIMITS, "-v",
                      f"{c.vol}:/var/lib/postseal", IMAGE, "postseal",
                      "queue", "list", "--json", "-d", "/var/lib/postseal/spool"],
            capture_output=True, text=True, timeout=120).stdout
        queued = len([ln for ln in pending.splitlines() if ln.strip()])
        print(f"acknowledged {len(acked)} (at SIGTERM {at_stop}), delivered "
              f"before stop {delivered_at_stop}, in the spool after stop "
              f"{queued} messages")
        c.start()
        ok = wait_until(lambda: acked <= set(sink_tokens(sink)), 120, 0.2)
        got = sink_tokens(sink)
        missing = sorted(acked - set(got))
        print(f"after restart: acknowledged {len(acked)}, delivered "
              f"{len(set(got) & acked)} of them ({len(got)} deliveries, "
              f"{len(got) - len(set(got))} duplicates), missing "
              f"{len(missing)}")
        check(ok and not missing, f"acknowledged but lost: {missing[:20]}")
        check(at_stop < 200 and queued > 0,
              f"the SIGTERM came mid-load with mail in the spool: "
              f"{at_stop} acknowledged then, {queued} queued after the stop")
        c.stop()
    finally:
        stop.set()
        sink.stop()


def cleanup():
    for kind, name in reversed(_cleanup):
        if kind == "container":
            podman("rm", "-f", "-t", "0", name, check_rc=False)
        elif kind == "volume":
            podman("volume", "rm", "-f", name, check_rc=False)
        elif kind == "file":
            os.unlink(name)


def main():
    if shutil.which("podman") is None:
        print("podman is not installed: the container test does not run "
              "(scripts/container-test.sh installs podman and runs it)")
        return 0
    try:
        build_image()
    except Exception as e:  # the build is the first test
        print(f"FAIL build_image: {e}")
        print("0 passed, 1 failed")
        return 1
    try:
        return run_tests([test_image, test_config_from_environment,
                          test_relay_dkim_metrics_health,
                          test_sigterm_mid_load_loses_nothing])
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
