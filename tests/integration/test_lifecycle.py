"""Daemon lifecycle: SIGHUP reloads without dropping sessions, SIGTERM
drains (an in-flight transaction completes, idle sessions get 421, exit
0), RFC 5321 timeouts, the metrics endpoint (checked by promtool), the
config checker, environment overrides, and the log lines."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (POSTSEALD, Conn, Daemon, check, free_port,  # noqa: E402
                     run_tests, wait_port)


def test_sighup_reload_keeps_sessions():
    with Daemon(extra="local_domains:\n  - ours.test\n") as d:
        c = Conn(d.smtp_port)
        check(c.cmd("EHLO a.test")[0] == 250, "EHLO")
        check(c.cmd("MAIL FROM:<a@x.test>")[0] == 250, "MAIL")
        check(c.cmd("RCPT TO:<u@ext.example>")[0] == 250, "relay allowed")
        # Reload with loopback no longer trusted.
        d.rewrite_config(extra="local_domains:\n  - ours.test\n",
                         mynetworks=["192.0.2.0/24"])
        d.signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "configuration reloaded" not in d.read_log():
            check(time.monotonic() < deadline, "reload logged")
            time.sleep(0.05)
        check(c.cmd("RCPT TO:<v@ext.example>")[0] == 554,
              "new policy applies to the open session")
        check(c.cmd("DATA")[0] == 354, "session survived the reload")
        c.send("Subject: hup\r\n\r\nstill here\r\n.\r\n")
        check(c.reply()[0] == 250, "message accepted after reload")
        c.close()
        # A broken configuration is refused and the old one kept.
        with open(d.config_path, "a") as f:
            f.write("no_such_key: 1\n")
        d.signal(signal.SIGHUP)
        time.sleep(0.5)
        check("reload refused" in d.read_log(), "bad reload refused")
        c = Conn(d.smtp_port)
        check(c.cmd("NOOP")[0] == 250, "still serving")
        c.close()


def test_sigterm_drains():
    with Daemon() as d:
        idle = Conn(d.smtp_port)
        busy = Conn(d.smtp_port)
        check(busy.cmd("EHLO b.test")[0] == 250, "EHLO")
        check(busy.cmd("MAIL FROM:<b@x.test>")[0] == 250, "MAIL")
        check(busy.cmd("RCPT TO:<u@x.test>")[0] == 250, "RCPT")
        check(busy.cmd("DATA")[0] == 354, "DATA")
        busy.send("Subject: drain\r\n\r\npart one\r\n")
        d.signal(signal.SIGTERM)
        code, lines = idle.reply()
        check(code == 421, f"idle session told 421: {code} {lines}")
        time.sleep(0.3)
        busy.send("part two\r\n.\r\n")
        code, lines = busy.reply()
        check(code == 250, f"in-flight message completes: {code} {lines}")
        check(busy.closed(), "busy session closed after its transaction")
        rc = d.proc.wait(timeout=20)
        check(rc == 0, f"exit 0 after SIGTERM, got {rc}")
        d.proc = None
        d.log.close()
        check(len(d.queue()) == 1, "the drained message is spooled")


def test_command_timeout():
    with Daemon(extra="timeouts:\n  command: 2\n") as d:
        c = Conn(d.smtp_port)
        start = time.monotonic()
        code, lines = c.reply()
        took = time.monotonic() - start
        check(code == 421 and "4.4.2" in lines[0],
              f"idle client gets 421 4.4.2: {code} {lines}")
        check(1.5 <= took <= 5, f"after about 2 s, took {took:.1f}")
        check(c.closed(), "connection closed")
        check("postseal_smtp_timeouts_total 1" in d.metrics(),
              "timeout counted")


def test_metrics_endpoint():
    with Daemon() as d:
        c = Conn(d.smtp_port)
        c.cmd("EHLO m.test")
        c.cmd("MAIL FROM:<m@x.test>")
        c.cmd("RCPT TO:<u@x.test>")
        c.cmd("DATA")
        c.send("Subject: m\r\n\r\nmetrics\r\n.\r\n")
        check(c.reply()[0] == 250, "message")
        c.cmd("QUIT")
        c.close()
        text = d.metrics()
        for want in ("postseal_messages_accepted_total 1",
                     'postseal_smtp_commands_total{verb="ehlo"} 1',
                     'postseal_smtp_commands_total{verb="data"} 1',
                     'postseal_smtp_sessions_total{listener="smtp"} 1',
                     "postseal_spool_commit_batch_records_count 1",
                     "postseal_queue_messages 1"):
            check(want in text, f"metrics contain {want!r}")
        promtool = shutil.which("promtool")
        check(promtool is not None, "promtool installed (setup.sh)")
        r = subprocess.run([promtool, "check", "metrics"], input=text,
                           capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.strip() == "" and
              r.stderr.strip() == "",
              f"promtool check metrics is silent: {r.stdout} {r.stderr}")
        import urllib.error
        import urllib.request
        try:
            urllib.request.urlopen(
                f"http://127.0.0.1:{d.metrics_port}/nope", timeout=5)
            check(False, "unknown path answers 404")
        except urllib.error.HTTPError as e:
            check(e.code == 404, f"404, got {e.code}")


def test_check_config():
    with Daemon() as d:
        r = subprocess.run([POSTSEALD, "--check-config", "-c", d.config_path],
                           capture_output=True, text=True, env=d.env)
        check(r.returncode == 0, f"valid config passes: {r.stderr}")
        bad = os.path.join(d.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("threads: 2\nlisten:\n  smtp: 127.0.0.1:99999\n")
        r = subprocess.run([POSTSEALD, "--check-config", "-c", bad],
                           capture_output=True, text=True, env=d.env)
        check(r.returncode != 0, "bad port refused")
        check(f"{bad}:3:" in r.stderr, f"error names file:line: {r.stderr}")


def test_env_overrides_and_json_logs():
    port, mport = free_port(reserve=True), free_port(reserve=True)
    d = Daemon(env={"POSTSEAL_SMTP_LISTEN": f"127.0.0.1:{port}",
                    "POSTSEAL_METRICS_LISTEN": f"127.0.0.1:{mport}",
                    "POSTSEAL_LOG_FORMAT": "json", "POSTSEAL_THREADS": "1"})
    d.smtp_port, d.metrics_port = port, mport
    with d:
        check(wait_port(port), "listens on the env address")
        c = Conn(port)
        c.cmd("EHLO j.test")
        c.cmd("MAIL FROM:<j@x.test>")
        c.cmd("RCPT TO:<u@x.test>")
        c.cmd("DATA")
        c.send("Subject: j\r\n\r\njson\r\n.\r\n")
        check(c.reply()[0] == 250, "message")
        c.close()
        check("postseal_threads 1" in d.metrics(), "POSTSEAL_THREADS applied")
        check(d.stop() == 0, "stop")
        events = [json.loads(line) for line in d.read_log().splitlines()
                  if line.startswith("{")]
        kinds = {e["event"] for e in events}
        check({"connect", "queued", "disconnect"} <= kinds,
              f"JSON log events: {kinds}")
        q = [e for e in events if e["event"] == "queued"][0]
        check(len(q["qid"]) == 16 and q["nrcpt"] == 1 and q["size"] > 0,
              f"queued line has qid, size, nrcpt: {q}")


if __name__ == "__main__":
    sys.exit(run_tests([
        test_sighup_reload_keeps_sessions, test_sigterm_drains,
        test_command_timeout, test_metrics_endpoint, test_check_config,
        test_env_overrides_and_json_logs]))
