"""The benchmark harnesses keep working as the daemon changes: a short
bench/ingress.sh --smoke run (and bench/relay.sh --smoke) (postseald only, 2,000 messages, no
thresholds) must finish, count every message in the spool, and print its
JSON summary."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BUILD, SOURCE, check, run_tests  # noqa: E402


def test_ingress_smoke():
    env = dict(os.environ, POSTSEALD=os.path.join(BUILD, "postseald"),
               POSTSEAL_CLI=os.path.join(BUILD, "postseal"))
    r = subprocess.run(["bash", os.path.join(SOURCE, "bench", "ingress.sh"),
                        "--smoke"], capture_output=True, text=True, env=env,
                       timeout=300)
    check(r.returncode == 0, f"smoke run exit 0: {r.stderr[-2000:]}")
    summary = json.loads(r.stdout)
    check(summary["meta"]["smoke"] is True, "smoke mode")
    run = summary["ingress"][0]["postseald"]
    print(json.dumps(run)[:400])
    check(run["counts_ok"] and run["smtp_source_ok"],
          "every message counted in the spool, smtp-source succeeded")
    check(run["messages"] == 2000 and run["msg_per_s"]["median"] > 0,
          "a rate was measured")


def test_relay_smoke():
    """bench/relay.sh --smoke: smtp-source -> postseald -> smtp-sink, 2,000
    messages, every one counted at the sink, none twice, queue empty."""
    env = dict(os.environ, POSTSEALD=os.path.join(BUILD, "postseald"),
               POSTSEAL_CLI=os.path.join(BUILD, "postseal"))
    r = subprocess.run(["bash", os.path.join(SOURCE, "bench", "relay.sh"),
                        "--smoke"], capture_output=True, text=True, env=env,
                       timeout=300)
    check(r.returncode == 0, f"relay smoke exit 0: {r.stderr[-2000:]}")
    summary = json.loads(r.stdout)
    check(summary["problems"] == [], f"no problems: {summary['problems']}")
    run = summary["relay"][0]["postseald"]
    check(run["counts_ok"] and run["duplicates"] == 0 and run["completed"] == 1,
          f"all 2,000 relayed once: {run}")


if __name__ == "__main__":
    sys.exit(run_tests([test_ingress_smoke, test_relay_smoke]))
