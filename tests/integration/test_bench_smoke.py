"""The benchmark harnesses keep working as the daemon changes: a short
bench/ingress.sh --smoke run, bench/relay.sh --smoke, bench/relay.sh --smoke
--driver postseal-bench and bench/relay.sh --smoke --tls (postseald only, 2,000
messages, no thresholds) must finish, count every message, print their JSON
summary and write a results file with its table and, where gnuplot is
installed, the chart beside it."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BUILD, SOURCE, check, run_tests  # noqa: E402


def bench_env():
    return dict(os.environ, POSTSEALD=os.path.join(BUILD, "postseald"),
                POSTSEAL_CLI=os.path.join(BUILD, "postseal"),
                POSTSEAL_BENCH=os.path.join(BUILD, "postseal-bench"))


def run_smoke(script, out_dir, *args):
    """Runs bench/SCRIPT --smoke ARGS writing OUT_DIR/SCRIPT.md; the summary."""
    md = os.path.join(out_dir, script.replace(".sh", ".md"))
    r = subprocess.run(["bash", os.path.join(SOURCE, "bench", script), "--smoke",
                        "--out", md, *args], capture_output=True, text=True,
                       env=bench_env(), timeout=300)
    check(r.returncode == 0, f"{script} {' '.join(args)} smoke exit 0: {r.stderr[-2000:]}")
    summary = json.loads(r.stdout)
    check(summary["meta"]["smoke"] is True, "smoke mode")
    check(summary["results_file"] == md and os.path.exists(md),
          f"results file written: {summary['results_file']}")
    return summary, md


def check_results_file(summary, md, header):
    """The Markdown has its table; the PNG is there and linked if gnuplot is."""
    with open(md) as f:
        text = f.read()
    check(header in text, f"results table header {header!r} in {md}")
    png = md[:-len(".md")] + ".png"
    if shutil.which("gnuplot"):
        check(summary["chart"] == png, f"chart {summary['chart']} == {png}: {summary['chart_note']}")
        with open(png, "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", "the chart is a PNG")
        check(f"]({os.path.basename(png)})" in text, "the results file links the chart")
    else:
        check(summary["chart"] is None and "gnuplot" in summary["chart_note"],
              f"no gnuplot, no chart, a note: {summary['chart_note']!r}")
        check("Chart: none" in text, "the results file says why there is no chart")


def test_ingress_smoke():
    with tempfile.TemporaryDirectory(prefix="postseal-bench-smoke.") as d:
        summary, md = run_smoke("ingress.sh", d)
        run = summary["ingress"][0]["postseald"]
        print(json.dumps(run)[:400])
        check(run["counts_ok"] and run["smtp_source_ok"],
              "every message counted in the spool, smtp-source succeeded")
        check(run["messages"] == 2000 and run["msg_per_s"]["median"] > 0,
              "a rate was measured")
        check_results_file(summary, md, "| size | N | postseald msg/s | Postfix msg/s |")


def test_relay_smoke():
    """bench/relay.sh --smoke: smtp-source -> postseald -> smtp-sink, 2,000
    messages, every one counted at the sink, none twice, queue empty."""
    with tempfile.TemporaryDirectory(prefix="postseal-bench-smoke.") as d:
        summary, md = run_smoke("relay.sh", d)
        check(summary["problems"] == [], f"no problems: {summary['problems']}")
        run = summary["relay"][0]["postseald"]
        check(run["counts_ok"] and run["duplicates"] == 0 and run["completed"] == 1,
              f"all 2,000 relayed once: {run}")
        check_results_file(summary, md, "| size | N | direct msg/s | postseald msg/s |")


def test_relay_smoke_postseal_bench():
    """bench/relay.sh --smoke --driver postseal-bench: postseal-bench send ->
    postseald -> postseal-bench sink, 2,000 messages, every one answered 250,
    counted once at the sink, queue empty, end-of-DATA latency reported."""
    with tempfile.TemporaryDirectory(prefix="postseal-bench-smoke.") as d:
        summary, md = run_smoke("relay.sh", d, "--driver", "postseal-bench")
        check(summary["problems"] == [], f"no problems: {summary['problems']}")
        check(summary["meta"]["driver"] == "postseal-bench", "the driver is recorded")
        run = summary["relay"][0]["postseald"]
        print(json.dumps(run)[:600])
        check(run["counts_ok"] and run["duplicates"] == 0 and run["completed"] == 1
              and run["load_ok"], f"all 2,000 relayed once: {run}")
        check(run["msg_per_s"]["median"] > 0, "a rate was measured")
        check(run["eod_p50_ms"] is not None and run["eod_p99_ms"] is not None
              and run["eod_p99_ms"]["median"] >= run["eod_p50_ms"]["median"],
              f"end-of-DATA p50 <= p99 reported: {run['eod_p50_ms']} {run['eod_p99_ms']}")
        check_results_file(summary, md, "| postseald EOD p50 ms | postseald EOD p99 ms |")


def test_relay_smoke_tls():
    """bench/relay.sh --smoke --tls: postseal-bench send --starttls
    --tls-resume -> postseald (STARTTLS offered, outbound TLS required) ->
    postseal-bench sink offering STARTTLS; every session on both legs ran
    TLS (the script checks it per run), and the raw in-memory handshake
    figure is in the results."""
    if not shutil.which("openssl"):
        print("openssl missing: skipped")
        return
    with tempfile.TemporaryDirectory(prefix="postseal-bench-smoke.") as d:
        summary, md = run_smoke("relay.sh", d, "--tls")
        check(summary["problems"] == [], f"no problems: {summary['problems']}")
        check(summary["meta"]["tls"] is True, "TLS is recorded")
        run = summary["relay"][0]["postseald"]
        print(json.dumps(run.get("tls"))[:400])
        check(run["counts_ok"] and run["duplicates"] == 0 and run["completed"] == 1,
              f"all 2,000 relayed once over TLS: {run}")
        t = run["tls"]
        check(t["in_full"] + t["in_resumed"] == 2000 and t["in_resumed"] > 0,
              f"one inbound handshake per message, most resumed: {t}")
        check(t["out_conns"] > 0 and t["out_full"] + t["out_resumed"] == t["out_conns"],
              f"every outbound connection ran TLS: {t}")
        raw = summary["meta"]["tls_raw"]
        check(raw["full"]["resumed"] == 0 and raw["resume"]["resumed"] > 0,
              f"raw figure, full and resumed: {list(raw)}")
        check_results_file(summary, md, "| size | path | inbound full / resumed |")
        with open(md) as f:
            check("### Raw figure" in f.read(), "the raw handshake figure is in the results")


if __name__ == "__main__":
    sys.exit(run_tests([test_ingress_smoke, test_relay_smoke,
                        test_relay_smoke_postseal_bench, test_relay_smoke_tls]))
