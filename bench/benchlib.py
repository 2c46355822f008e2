#!/usr/bin/python3
"""Helpers for bench/ingress.sh and bench/relay.sh (loopback only, everything bounded).

  benchlib.py freeport [--low]                -> a free port (--low: below the ephemeral range)
  benchlib.py waitsmtp PORT TIMEOUT_S
  benchlib.py cpu {proc|tree} PID            -> clock ticks (see below)
  benchlib.py rss PID                        -> VmRSS in KiB
  benchlib.py run --mode {proc|tree} --pid PID --log FILE -- CMD...
  benchlib.py idle --pid PID --port PORT --count N [--hold S]
  benchlib.py report --runs RUNS.jsonl --meta META.json --md OUT.md [--chart PNG | --chart-note TEXT]
  benchlib.py relayrun --mode {proc|tree|none} [--pid PID] --sink-pid SPID --sink-out FILE
                       --expect N [--queue-cmd CMD] --log FILE -- CMD...
  benchlib.py pbrelayrun --mode {proc|tree|none} [--pid PID] --sink-cmd CMD --sink-port PORT
                       --sink-report FILE --sink-log FILE --send-json FILE --expect N
                       [--queue-cmd CMD] --log FILE -- SEND_CMD...
  benchlib.py relayreport --runs RUNS.jsonl --meta META.json --md OUT.md [--chart PNG | --chart-note TEXT]
  benchlib.py chart --kind {relay|ingress} --runs RUNS.jsonl --meta META.json --png OUT.png [--gnuplot PATH]

CPU accounting (/proc/PID/stat, fields counted from after the ")" of comm):
  proc: utime+stime of PID (all its threads).
  tree: PID's utime+stime+cutime+cstime (cutime/cstime = children that have
        exited and been reaped) + utime+stime+cutime+cstime of every live
        descendant.  For a Postfix master this is master + smtpd/cleanup/
        trivial-rewrite/qmgr/... alive now + those already gone.
"""
import argparse
import json
import os
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] = state (field 3); utime = field 14 -> rest[11]
    return {
        "ppid": int(rest[1]),
        "utime": int(rest[11]), "stime": int(rest[12]),
        "cutime": int(rest[13]), "cstime": int(rest[14]),
    }


def cpu_proc(pid):
    s = stat_fields(pid)
    return s["utime"] + s["stime"]


def cpu_tree(root):
    # live processes and their parents
    parent = {}
    stats = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            s = stat_fields(int(d))
        except (OSError, ValueError):
            continue
        parent[int(d)] = s["ppid"]
        stats[int(d)] = s
    if root not in stats:
        raise SystemExit(f"benchlib: process {root} is gone")
    children = {}
    for p, pp in parent.items():
        children.setdefault(pp, []).append(p)
    total, nproc, todo = 0, 0, [root]
    while todo:
        p = todo.pop()
        s = stats[p]
        total += s["utime"] + s["stime"] + s["cutime"] + s["cstime"]
        nproc += 1
        todo.extend(children.get(p, []))
    return total, nproc


def system_ticks():
    """(busy, total) clock ticks of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)      # idle + iowait
    total = sum(v[:8])                              # guest time is already in user
    return total - idle, total


def all_procs():
    """pid -> (comm, ppid, utime+stime ticks, starttime) for every process."""
    d = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                data = f.read()
            i = data.rindex(b")")
            rest = data[i + 2:].split()
            d[int(p)] = (data[data.index(b"(") + 1:i].decode(errors="replace"), int(rest[1]),
                         int(rest[11]) + int(rest[12]), int(rest[19]))
        except (OSError, ValueError):
            continue
    return d


def descendants(procs, root):
    kids = {}
    for p, (_, pp, _, _) in procs.items():
        kids.setdefault(pp, []).append(p)
    out, todo = set(), [root]
    while todo:
        p = todo.pop()
        out.add(p)
        todo.extend(kids.get(p, []))
    return out


def foreign_cpu(before, after, exclude, kernel=False):
    """Processes other than ours that used CPU between two all_procs() snapshots.
    kernel=False: user-space processes only; kernel=True: kernel threads only
    (children of kthreadd, pid 2), e.g. the ext4/block workers doing I/O for the server."""
    res = []
    for p, (comm, pp, t, st) in after.items():
        if p in exclude or p == os.getpid():
            continue
        if (p == 2 or pp == 2) != kernel:
            continue
        t0 = before[p][2] if p in before and before[p][3] == st else 0
        if t - t0 >= 1:
            res.append((t - t0, comm.split("-")[0] if kernel else comm, p))
    res.sort(reverse=True)
    return [{"pid": p, "comm": c, "cpu_s": t / CLK_TCK} for t, c, p in res]


def wait_idle(max_busy_pct, timeout, exclude_root=None):
    """Wait until the machine's busy CPU over 1 s is below max_busy_pct; return (ok, waited_s, last_pct, hogs)."""
    t0 = time.monotonic()
    pct, hogs = 100.0, []
    while True:
        a, pa = system_ticks(), all_procs()
        time.sleep(1.0)
        b, pb = system_ticks(), all_procs()
        pct = 100.0 * (b[0] - a[0]) / max(1, b[1] - a[1])
        if pct <= max_busy_pct:
            return True, time.monotonic() - t0, pct, []
        excl = descendants(pb, exclude_root) if exclude_root else set()
        hogs = foreign_cpu(pa, pb, excl)
        if time.monotonic() - t0 > timeout:
            return False, time.monotonic() - t0, pct, hogs


def cpu(mode, pid):
    if mode == "proc":
        return cpu_proc(pid), 1
    return cpu_tree(pid)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("benchlib: no VmRSS")


def cmd_freeport(a):
    """A free loopback port: any (the kernel picks one from the ephemeral range), or
    with --low one below that range, which no outgoing connection can take as its
    source port while nothing listens on it (a sink restarted between runs)."""
    if not a.low:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])
        s.close()
        return 0
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_lo = int(f.read().split()[0])
    lo, hi = 10000, min(eph_lo, 32768)
    if hi - lo < 1000:
        raise SystemExit("benchlib: no room below the ephemeral port range")
    import random
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(lo, hi)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        print(port)
        return 0
    raise SystemExit("benchlib: no free port below the ephemeral range after 200 tries")


def cmd_waitsmtp(a):
    deadline = time.monotonic() + a.timeout
    last = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", a.port), timeout=2) as s:
                line = s.makefile("rb").readline()
                if line.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return 0
                last = line
        except OSError as e:
            last = e
        time.sleep(0.1)
    print(f"benchlib: no SMTP greeting on 127.0.0.1:{a.port}: {last}", file=sys.stderr)
    return 1


def cmd_waitidle(a):
    ok, waited, pct, hogs = wait_idle(a.max_busy, a.timeout)
    print(json.dumps({"ok": ok, "waited_s": round(waited, 1), "busy_pct": round(pct, 1), "hogs": hogs}))
    return 0 if ok else 1


def cmd_cpu(a):
    t, n = cpu(a.mode, a.pid)
    print(t, n)


def cmd_rss(a):
    print(rss_kib(a.pid))


def cmd_run(a):
    """Run CMD, report wall time, its rusage and the server's CPU delta."""
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    idle_ok, waited, idle_pct, hogs = wait_idle(a.max_busy, a.idle_timeout, a.pid)
    procs0 = all_procs()
    before, n_before = cpu(a.mode, a.pid)
    sys0 = system_ticks()
    with open(a.log, "wb") as log:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    sys1 = system_ticks()
    procs1 = all_procs()
    p.returncode = os.waitstatus_to_exitcode(status)
    # let exiting server processes be reaped so their time lands in cutime
    time.sleep(a.settle)
    alive = True
    try:
        after, n_after = cpu(a.mode, a.pid)
    except SystemExit:
        alive, after, n_after = False, before, 0
    ours = descendants(procs1, a.pid) | descendants(procs0, a.pid) | {p.pid}
    foreign = foreign_cpu(procs0, procs1, ours)
    kthreads = foreign_cpu(procs0, procs1, ours, kernel=True)
    print(json.dumps({
        "idle_before_ok": idle_ok, "idle_wait_s": round(waited, 1), "idle_busy_pct": round(idle_pct, 1),
        "idle_hogs": hogs,
        "foreign_procs": foreign[:5],
        "kernel_threads_cpu_s": sum(f["cpu_s"] for f in kthreads),
        "foreign_cpu_s": sum(f["cpu_s"] for f in foreign),
        "rc": p.returncode,
        "wall_s": wall,
        "client_cpu_s": ru.ru_utime + ru.ru_stime,
        "server_ticks": after - before,
        "server_cpu_s": (after - before) / CLK_TCK,
        "server_procs_before": n_before,
        "server_procs_after": n_after,
        "server_alive": alive,
        "machine_busy_pct": round(100.0 * (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1]), 1),
        "machine_busy_cpu_s": (sys1[0] - sys0[0]) / CLK_TCK,
    }))


def cmd_idle(a):
    """Open COUNT idle sessions (greeting + EHLO), measure PID's VmRSS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    time.sleep(0.2)
    rss0 = rss_kib(a.pid)
    socks, errors = [], []
    t0 = time.perf_counter()
    deadline = t0 + a.timeout
    ok = 0

    def open_batch(k):
        nonlocal ok
        batch = []
        for i in range(k):
            if time.perf_counter() > deadline:
                errors.append("time limit reached while connecting")
                break
            try:
                s = socket.create_connection(("127.0.0.1", a.port), timeout=10)
                s.sendall(b"EHLO idle.bench.test\r\n")   # pipelined after the greeting
                batch.append(s)
            except OSError as e:
                errors.append(f"connect {len(socks) + i}: {e}")
                break
        # read greeting + EHLO reply from every session of the batch
        for s in batch:
            try:
                f = s.makefile("rb")
                g = f.readline()
                if not g.startswith(b"220"):
                    raise OSError(f"greeting {g!r}")
                while True:
                    line = f.readline()
                    if not line:
                        raise OSError("closed")
                    if line[3:4] != b"-":
                        break
                if line.startswith(b"250"):
                    ok += 1
                else:
                    raise OSError(f"EHLO {line!r}")
            except OSError as e:
                if len(errors) < 10:
                    errors.append(str(e))
        socks.extend(batch)

    half = a.count // 2
    open_batch(half)
    ok_half = ok
    time.sleep(0.3)
    rss_half = rss_kib(a.pid)
    open_batch(a.count - half)
    setup_s = time.perf_counter() - t0
    time.sleep(a.hold)
    rss1 = rss_kib(a.pid)
    for s in socks:
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
    for s in socks:
        s.close()
    time.sleep(1.0)
    rss2 = rss_kib(a.pid)
    print(json.dumps({
        "sessions_requested": a.count,
        "sessions_open": ok,
        "setup_s": round(setup_s, 3),
        "rss_before_kib": rss0,
        "rss_idle_kib": rss1,
        "rss_after_close_kib": rss2,
        "kib_per_session": round((rss1 - rss0) / ok, 2) if ok else None,
        "rss_half_kib": rss_half, "sessions_half": ok_half,
        "kib_per_session_marginal": round((rss1 - rss_half) / (ok - ok_half), 2) if ok > ok_half else None,
        "errors": errors[:10],
    }))
    return 0 if ok == a.count else 1


# ---------------------------------------------------------------- report

def fmt(v, nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}"


def summarize(vals):
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}



def machine_section(L, meta, tool_label):
    """The "Machine and versions" list of a results file."""
    L.append("## Machine and versions")
    L.append("")
    for k, label in [("date", "date (UTC)"), ("nproc", "nproc"), ("cpu_model", "CPU"),
                     ("kernel", "kernel"), ("debian", "Debian"), ("memory", "memory"),
                     ("filesystem", "spool/queue filesystem"),
                     ("fdatasync_ms", "fdatasync of 1 KiB append, mean ms (this disk)"),
                     ("postseald_rev", "postseald git rev"), ("postseald_tree", "postseald working tree"),
                     ("postseald_binary", "postseald binary"),
                     ("postfix_version", "Postfix mail_version"), ("smtp_source", tool_label),
                     ("python", "python3")]:
        if k in meta:
            L.append(f"- {label}: {meta[k]}")
    L.append("")

def cmd_report(a):
    meta = json.load(open(a.meta))
    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    sizes = sorted({r["size"] for r in runs})
    servers = ["postseald", "postfix"]
    summary = {"meta": {k: meta[k] for k in meta if k not in ("commands", "notes", "postseald_config", "postfix_main_cf", "postfix_master_cf", "latency", "idle", "problems", "warnings")}, "ingress": [], "problems": []}
    for r in runs:
        if r.get("problems"):
            summary["problems"].extend(f"{r['server']} size={r['size']} rep={r['rep']}: {p}" for p in r["problems"])
    for p in meta.get("problems", []):
        summary["problems"].append(p)

    rows = []
    for size in sizes:
        row = {"size": size}
        for srv in servers:
            rs = [r for r in runs if r["server"] == srv and r["size"] == size]
            if not rs:
                row[srv] = None
                continue
            row[srv] = {
                "messages": rs[0]["n"],
                "sessions": rs[0]["sessions"],
                "reps": len(rs),
                "msg_per_s": summarize([r["n"] / r["wall_s"] for r in rs]),
                "cpu_ms_per_msg": summarize([r["server_cpu_s"] * 1000.0 / r["n"] for r in rs]),
                "client_cpu_ms_per_msg": summarize([r["client_cpu_s"] * 1000.0 / r["n"] for r in rs]),
                "counts_ok": all(r["count_delta"] == r["n"] for r in rs),
                "smtp_source_ok": all(r["rc"] == 0 for r in rs),
            }
        ps, pf = row.get("postseald"), row.get("postfix")
        if ps and pf:
            row["throughput_ratio"] = ps["msg_per_s"]["median"] / pf["msg_per_s"]["median"]
            row["cpu_ratio"] = ps["cpu_ms_per_msg"]["median"] / pf["cpu_ms_per_msg"]["median"] \
                if pf["cpu_ms_per_msg"]["median"] else None
        rows.append(row)
    summary["ingress"] = rows
    summary["warnings"] = meta.get("warnings", [])
    summary["latency"] = meta.get("latency")
    summary["idle_memory"] = meta.get("idle")

    def thr(x):
        if not x:
            return "n/a"
        m = x["msg_per_s"]
        return f"{fmt(m['median'])} ({fmt(m['min'])}–{fmt(m['max'])})"

    def cpu_s(x):
        if not x:
            return "n/a"
        m = x["cpu_ms_per_msg"]
        return f"{fmt(m['median'], 3)} ({fmt(m['min'], 3)}–{fmt(m['max'], 3)})"

    L = []
    L.append(f"# SMTP ingress: postseald vs Postfix {meta.get('postfix_version', '')} — {meta['date']}")
    L.append("")
    if meta.get("smoke"):
        L.append("**Smoke run** (one size, small N, one repetition, postseald only): "
                 "numbers are a sanity check, not a measurement.")
        L.append("")
    L.append("Generated by `bench/ingress.sh`. \"Accepted\" means the server answered the final "
             "`.` of DATA with 250, which both servers only do after the message is on stable "
             "storage (postseald: group-committed `fdatasync`; Postfix: `fsync` of the queue file "
             "by cleanup(8)).")
    L.append("")
    machine_section(L, meta, "load tool")
    L.append("## Results")
    L.append("")
    reuse = meta.get("reuse", False)
    L.append(f"Load: `smtp-source{' -d' if reuse else ''} -s {meta['sessions']}` "
             f"({meta['sessions']} concurrent sessions, "
             + ("connections reused for many messages (-d), " if reuse else
                "one message per connection, ")
             + "one recipient), message size as listed, "
             f"{meta['reps']} repetition(s) per cell after a warm-up run; msg/s = N / wall time of "
             "smtp-source; median (min–max). CPU ms/msg = server CPU (user+system) during the run / N. "
             "Ratios are postseald / Postfix (throughput: higher is better for postseald; "
             "CPU: lower is better for postseald).")
    L.append("")
    L.append("| size | N | postseald msg/s | Postfix msg/s | ratio | postseald CPU ms/msg | Postfix CPU ms/msg | ratio |")
    L.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        ps, pf = row.get("postseald"), row.get("postfix")
        n = (ps or pf)["messages"]
        tr = f"{row['throughput_ratio']:.2f}×" if row.get("throughput_ratio") else "n/a"
        cr = f"{row['cpu_ratio']:.2f}×" if row.get("cpu_ratio") else "n/a"
        L.append(f"| {row['size']} B | {n} | {thr(ps)} | {thr(pf)} | {tr} | {cpu_s(ps)} | {cpu_s(pf)} | {cr} |")
    L.append("")
    chart_lines(L, a)
    L.append("Load tool CPU (smtp-source user+system, ms/msg, median): " + "; ".join(
        f"{row['size']} B: postseald run {fmt(row['postseald']['client_cpu_ms_per_msg']['median'], 3) if row.get('postseald') else 'n/a'}, "
        f"Postfix run {fmt(row['postfix']['client_cpu_ms_per_msg']['median'], 3) if row.get('postfix') else 'n/a'}"
        for row in rows) + ".")
    L.append("")
    L.append("Every run was checked: messages in the spool/hold queue after the run minus before == N. "
             + ("**All counts matched.**" if not any(
                 "count" in p for p in summary["problems"]) else "**MISMATCHES — see Problems.**"))
    L.append("")
    L.append("### Per run")
    L.append("")
    L.append("Machine busy = all CPUs, non-idle time from /proc/stat over the run (100% = both cores busy); "
             "kernel threads = kworker/ksoftirqd/jbd2... (mostly I/O and network work done on behalf of the server, "
             "not charged to it); other processes = user-space processes not part of the benchmark (a shared "
             "machine). Time in interrupts and steal is in machine CPU s only.")
    L.append("")
    L.append("| server | size | rep | N | wall s | msg/s | server CPU s | CPU ms/msg | smtp-source CPU s | kernel threads CPU s | other processes CPU s | machine CPU s | machine busy | queued Δ | smtp-source rc |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in runs:
        L.append(f"| {r['server']} | {r['size']} | {r['rep']} | {r['n']} | {r['wall_s']:.2f} | "
                 f"{r['n'] / r['wall_s']:,.0f} | {r['server_cpu_s']:.2f} | "
                 f"{r['server_cpu_s'] * 1000 / r['n']:.3f} | {r['client_cpu_s']:.2f} | "
                 f"{r.get('kernel_threads_cpu_s', 0):.2f} | "
                 f"{r.get('foreign_cpu_s', 0):.2f}{' (' + ', '.join(x['comm'] for x in r.get('foreign_procs', [])) + ')' if r.get('foreign_procs') else ''} | "
                 f"{r.get('machine_busy_cpu_s', 0):.2f} | {r.get('machine_busy_pct', 0):.0f}% | "
                 f"{r['count_delta']} | {r['rc']} |")
    L.append("")
    lat = meta.get("latency")
    L.append("## Latency: end of DATA to 250 (postseald)")
    L.append("")
    if lat:
        e = lat["eod_to_250_ms"]
        L.append(f"`bench/latency.py`: {lat['sessions']} persistent sessions (threads, PIPELINING for "
                 f"MAIL/RCPT/DATA), {lat['size']} B messages, target {lat['target_rate']:,.0f} msg/s "
                 f"({meta.get('latency_basis', '')}), {lat['duration_s']:g} s. Achieved "
                 f"{lat['achieved_rate']:,.0f} msg/s, {lat['messages_ok']} messages accepted, "
                 f"{lat['messages_rejected']} rejected, {lat['sessions_failed']} sessions failed.")
        L.append("")
        L.append("| p50 | p90 | p99 | p99.9 | max |")
        L.append("| ---: | ---: | ---: | ---: | ---: |")
        L.append(f"| {e['p50']} ms | {e['p90']} ms | {e['p99']} ms | {e['p999']} ms | {e['max']} ms |")
        L.append("")
        L.append(f"Scheduling lag of the client (message start after its due time): p50 "
                 f"{lat['start_lag_ms']['p50']} ms, p99 {lat['start_lag_ms']['p99']} ms, max "
                 f"{lat['start_lag_ms']['max']} ms. The times include the Python client's own "
                 "wake-up and parsing delay (GIL, 2 cores shared with the server), so they are an "
                 "upper bound on the server's.")
        if lat.get("errors"):
            L.append("")
            L.append("Client errors: " + "; ".join(f"`{x}`" for x in lat["errors"]))
    else:
        L.append("not measured")
    L.append("")
    idle = meta.get("idle")
    L.append("## Memory per idle session (postseald)")
    L.append("")
    if idle:
        L.append(f"{idle['sessions_open']} of {idle['sessions_requested']} connections opened, each after "
                 f"greeting + EHLO, held idle; postseald VmRSS {idle['rss_before_kib']:,} KiB before, "
                 f"{idle['rss_idle_kib']:,} KiB with them open, {idle['rss_after_close_kib']:,} KiB 1 s "
                 f"after closing. **{idle['kib_per_session']} KiB per idle session** (RSS delta / sessions, on a fresh "
                 "daemon that had served no traffic, so one-time lazy allocations are included); "
                 f"marginal cost between {idle.get('sessions_half')} and {idle['sessions_open']} sessions "
                 f"(RSS {idle.get('rss_half_kib', 0):,} → {idle['rss_idle_kib']:,} KiB): "
                 f"**{idle.get('kib_per_session_marginal')} KiB per session**. Kernel socket buffers are not in "
                 "RSS and not counted. RSS is not given back after the sessions close (allocator keeps it); "
                 "a second round of sessions reuses it without growth, so this is not a leak.")
        if idle.get("errors"):
            L.append("")
            L.append("Errors: " + "; ".join(f"`{x}`" for x in idle["errors"]))
    else:
        L.append("not measured")
    L.append("")
    report_tail(L, summary, meta,
                "None: every smtp-source run exited 0, every count matched, the servers stayed up.")
    with open(a.md, "w") as f:
        f.write("\n".join(L))
    summary["results_file"] = a.md
    summary["chart"] = a.chart or None
    summary["chart_note"] = a.chart_note
    print(json.dumps(summary, indent=None))


# ---------------------------------------------------------------- relay (bench/relay.sh)

def sink_counts(path):
    """Last complete counter record of `smtp-sink -c` (records "sess=S quit=Q mesg=M"
    separated by \\r) -> (sess, mesg), or (0, 0) before the first record."""
    import re
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 512))
            data = f.read()
    except OSError:
        return 0, 0
    for rec in reversed(data.split(b"\r")[:-1]):       # the last element is unterminated
        m = re.fullmatch(rb"\n?sess=(\d+) quit=(\d+) mesg=(\d+)\n?", rec)
        if m:
            return int(m.group(1)), int(m.group(3))
    return 0, 0


def queue_count(cmd):
    """Run CMD (a shell-free command line), count the non-empty lines it prints; None on failure."""
    try:
        r = subprocess.run(shlex.split(cmd), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    return sum(1 for l in r.stdout.splitlines() if l.strip())


def cmd_relayrun(a):
    """Run CMD (the load: smtp-source) and time it until the sink has counted --expect
    more messages; then wait for the relay's queue to drain and report counts and CPU."""
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    relay = a.pid if a.mode != "none" else None
    idle_ok, waited, idle_pct, hogs = wait_idle(a.max_busy, a.idle_timeout, relay or a.sink_pid)
    q_before = queue_count(a.queue_cmd) if a.queue_cmd else 0
    _, c0 = sink_counts(a.sink_out)
    procs0 = all_procs()
    relay0 = cpu(a.mode, relay)[0] if relay else 0
    sink0 = cpu_tree(a.sink_pid)[0]
    sys0 = system_ticks()
    t_src = t_done = None
    status, ru = None, None
    timed_out = stalled = False
    with open(a.log, "wb") as log:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        last_c, last_progress = c0, t0
        sys1 = procs1 = None
        while True:
            now = time.perf_counter()
            if t_src is None:
                pid, st, r = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    t_src, status, ru = now, st, r
            _, c = sink_counts(a.sink_out)
            if c != last_c:
                last_c, last_progress = c, now
            if t_done is None and c - c0 >= a.expect:
                t_done = now
                sys1, procs1 = system_ticks(), all_procs()
            if t_done is not None and t_src is not None:
                break
            if now - t0 > a.timeout:
                timed_out = True
                break
            if now - last_progress > a.stall and (t_src is not None or now - t0 > a.stall):
                stalled = True
                break
            time.sleep(a.poll)
        if t_src is None:               # timed out or stalled while smtp-source still runs
            p.kill()
            _, status, ru = os.wait4(p.pid, 0)
            t_src = time.perf_counter()
    if sys1 is None:
        sys1, procs1 = system_ticks(), all_procs()
    rc = os.waitstatus_to_exitcode(status)
    _, c_done = sink_counts(a.sink_out)
    # the relay's queue must drain: postseald removes a message once its DONE records are
    # durable, Postfix once qmgr has seen the delivery status
    t_drain0 = time.perf_counter()
    q_after = queue_count(a.queue_cmd) if a.queue_cmd else 0
    while q_after != 0 and time.perf_counter() - t_drain0 < a.drain_timeout:
        time.sleep(0.2)
        q_after = queue_count(a.queue_cmd)
    drain_s = time.perf_counter() - t_drain0
    time.sleep(a.settle)                # late duplicates; exiting Postfix children get reaped
    _, c_final = sink_counts(a.sink_out)
    alive = True
    relay1 = relay0
    if relay:
        try:
            relay1 = cpu(a.mode, relay)[0]
        except SystemExit:
            alive = False
    try:
        sink1 = cpu_tree(a.sink_pid)[0]
    except SystemExit:
        sink1 = sink0
    ours = descendants(procs1, p.pid) | {p.pid} | descendants(procs1, a.sink_pid) | descendants(procs0, a.sink_pid)
    if relay:
        ours |= descendants(procs1, relay) | descendants(procs0, relay)
    foreign = foreign_cpu(procs0, procs1, ours)
    kthreads = foreign_cpu(procs0, procs1, ours, kernel=True)
    wall = (t_done - t0) if t_done is not None else None
    print(json.dumps({
        "idle_before_ok": idle_ok, "idle_wait_s": round(waited, 1), "idle_busy_pct": round(idle_pct, 1),
        "idle_hogs": hogs,
        "foreign_procs": foreign[:5],
        "kernel_threads_cpu_s": sum(f["cpu_s"] for f in kthreads),
        "foreign_cpu_s": sum(f["cpu_s"] for f in foreign),
        "rc": rc,
        "wall_s": wall,                               # first connection .. sink has N
        "ingress_s": t_src - t0,                      # first connection .. smtp-source done
        "timed_out": timed_out, "stalled": stalled,
        "stalled_at": (c_done - c0) if (timed_out or stalled) else None,
        "delivered_at_done": c_done - c0,
        "delivered": c_final - c0,
        "duplicates": max(0, c_final - c0 - a.expect),
        "queue_before": q_before, "queue_after": q_after, "drain_s": round(drain_s, 2),
        "client_cpu_s": ru.ru_utime + ru.ru_stime,
        "server_cpu_s": (relay1 - relay0) / CLK_TCK,
        "sink_cpu_s": (sink1 - sink0) / CLK_TCK,
        "server_alive": alive,
        "machine_busy_pct": round(100.0 * (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1]), 1),
        "machine_busy_cpu_s": (sys1[0] - sys0[0]) / CLK_TCK,
    }))


def tcp_sockets(port, state):
    """TCP sockets whose local port is PORT in STATE ("01" established, "0A" listening)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    v = line.split()
                    if v[3] == state and int(v[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except OSError:
            continue
    return n


def sink_conns(port):
    """Established TCP connections on the sink's side of PORT."""
    return tcp_sockets(port, "01")


def probe_sink(proc, port, timeout):
    """Wait for the sink's greeting; return (connected, greeted) of the first session
    it accepted (CLOCK_MONOTONIC, s), or None.  The probe waits until
    the port listens (without connecting: only the first session dates the sink's
    report) and a little longer for the sink's ring, so that the accept is prompt
    and the interval short."""
    deadline = time.monotonic() + timeout
    while not tcp_sockets(port, "0A") and time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        time.sleep(0.02)
    time.sleep(0.1)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                t_a = time.monotonic()      # handshake done: the sink's accept comes after
                line = s.makefile("rb").readline()
                t_b = time.monotonic()
                if line.startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return t_a, t_b
                return None          # a session was accepted, but not by a sink
        except OSError:
            time.sleep(0.05)
    return None


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def stop_child(p, grace):
    """SIGTERM P (a `timeout` wrapper passes it on), SIGKILL after GRACE s; its exit code."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def run_bounded(cmd, log_path, t_limit):
    """Run CMD with its output to LOG_PATH until it exits or time.monotonic() passes
    T_LIMIT (then SIGKILL); (exit status, rusage, timed out)."""
    timed_out = False
    with open(log_path, "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                if time.monotonic() > t_limit:
                    timed_out = True
                    p.kill()
                    _, status, ru = os.wait4(p.pid, 0)
                    break
                time.sleep(0.005)
        except BaseException:
            p.kill()
            raise
    return os.waitstatus_to_exitcode(status), ru, timed_out


def drain_queue(queue_cmd, t_limit, stall, poll):
    """List the relay's queue every POLL s until it is empty, it has not changed for
    STALL s, or time.monotonic() passes T_LIMIT; (last count, timed out, stalled)."""
    q = queue_count(queue_cmd)
    last_q, last_change = q, time.monotonic()
    while q != 0:
        now = time.monotonic()
        if now > t_limit:
            return q, True, False
        if now - last_change > stall:
            return q, False, True
        time.sleep(poll)
        q = queue_count(queue_cmd)
        if q != last_q:
            last_q, last_change = q, time.monotonic()
    return q, False, False


def pb_reports(a, anchor, t0, done_ok):
    """Both tools' reports as run-record fields.  The sink's last 250 happened at its
    first session (the probe: between connect and greeting) + active_s."""
    srep = load_json(a.sink_report) or {}
    send = load_json(a.send_json) or {}
    delivered = srep.get("messages", 0)
    t_last = (anchor[0] + anchor[1]) / 2 + srep["active_s"] if delivered else None
    done = done_ok and t_last is not None and delivered >= a.expect
    lat = send.get("latency_us", {})
    ms = lambda h, k: round(h[k] / 1000.0, 3) if h and h.get("count") else None  # noqa: E731
    msgs, rcpts = send.get("messages", {}), srep.get("recipients", {})
    tin, tout = send.get("tls") or {}, srep.get("tls") or {}
    return t_last if done else None, {
        "wall_s": (t_last - t0) if done else None,          # start of send .. the sink's last 250
        "anchor_err_ms": round((anchor[1] - anchor[0]) * 500.0, 3),
        "delivered_at_done": delivered, "delivered": delivered,
        "duplicates": max(0, delivered - a.expect),
        "sink_report_ok": bool(srep), "sink_sessions": srep.get("sessions"),
        "sink_rcpt_refused": rcpts.get("tempfailed", 0) + rcpts.get("permfailed", 0),
        "send_report_ok": bool(send),
        "send_accepted": msgs.get("accepted"), "send_tempfailed": msgs.get("tempfailed"),
        "send_permfailed": msgs.get("permfailed"), "send_lost": msgs.get("lost"),
        "send_errors": send.get("errors"), "send_msg_per_s": send.get("msg_per_s"),
        "eod_p50_ms": ms(lat.get("data"), "p50"), "eod_p99_ms": ms(lat.get("data"), "p99"),
        "msg_p50_ms": ms(lat.get("message"), "p50"), "msg_p99_ms": ms(lat.get("message"), "p99"),
        "send_sessions": send.get("sessions"),
        # TLS (--tls): inbound = the sender's handshakes, outbound = the sink's
        "in_hs_full": tin.get("full"), "in_hs_resumed": tin.get("resumed"),
        "in_hs_failed": tin.get("failed"), "in_tls_version": tin.get("version"),
        "in_tls_cipher": tin.get("cipher"),
        "tls_p50_ms": ms(lat.get("tls"), "p50"), "tls_p99_ms": ms(lat.get("tls"), "p99"),
        "out_hs_full": tout.get("full"), "out_hs_resumed": tout.get("resumed"),
        "out_hs_failed": tout.get("failed"),
    }


def cmd_pbrelayrun(a):
    """One run with postseal-bench: start a fresh `postseal-bench sink` on --sink-port,
    run CMD (`postseal-bench send`), wait until the relay's queue is empty, stop the
    sink and read both JSON reports.

    The sink has no live counter, so the end of a run is taken from its report: the
    sink's first session is our probe (its accept lies between the probe's connect
    and the greeting), and active_s runs from that accept to its last 250, both on
    CLOCK_MONOTONIC like time.monotonic(); so the last delivery happened at
    probe + active_s, and e2e = that - start of CMD."""
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    relay = a.pid if a.mode != "none" else None
    idle_ok, waited, idle_pct, hogs = wait_idle(a.max_busy, a.idle_timeout, relay)
    for path in (a.sink_report, a.send_json):
        if os.path.exists(path):
            os.unlink(path)
    with open(a.sink_log, "ab") as slog:
        sink = subprocess.Popen(shlex.split(a.sink_cmd), stdout=slog, stderr=subprocess.STDOUT)
    try:
        anchor = probe_sink(sink, a.sink_port, 15)
        if anchor is None:
            print(json.dumps({"rc": -1, "sink_failed": True, "wall_s": None}))
            return 1
        q_before = queue_count(a.queue_cmd) if a.queue_cmd else 0
        procs0 = all_procs()
        relay0 = cpu(a.mode, relay)[0] if relay else 0
        sink0 = cpu_tree(sink.pid)[0]
        sys0 = system_ticks()
        t0 = time.monotonic()
        rc, ru, timed_out = run_bounded(cmd, a.log, t0 + a.timeout)
        t_src = time.monotonic()
        q_after, stalled = 0, False
        if a.queue_cmd and not timed_out:
            q_after, timed_out, stalled = drain_queue(a.queue_cmd, t0 + a.timeout, a.stall, a.poll)
        t_empty = time.monotonic()
        sys1, procs1 = system_ticks(), all_procs()
        time.sleep(a.settle)            # late duplicates; exiting Postfix children get reaped
        alive, relay1 = True, relay0
        if relay:
            try:
                relay1 = cpu(a.mode, relay)[0]
            except SystemExit:
                alive = False
        try:
            sink1 = cpu_tree(sink.pid)[0]
        except SystemExit:
            sink1 = sink0
        # let the relay close its connections to the sink itself (postseald after 1 s
        # idle, Postfix's connection cache after 2 s) before the sink goes away
        t_c = time.monotonic()
        left = sink_conns(a.sink_port)
        while left and time.monotonic() - t_c < a.close_timeout:
            time.sleep(0.1)
            left = sink_conns(a.sink_port)
        ours = descendants(procs1, sink.pid) | descendants(procs0, sink.pid)
        if relay:
            ours |= descendants(procs1, relay) | descendants(procs0, relay)
    finally:
        sink_rc = stop_child(sink, 10)
    t_last, rec = pb_reports(a, anchor, t0, not timed_out and not stalled)
    foreign = foreign_cpu(procs0, procs1, ours)      # the sender has exited: not in procs1
    kthreads = foreign_cpu(procs0, procs1, ours, kernel=True)
    rec.update({
        "idle_before_ok": idle_ok, "idle_wait_s": round(waited, 1), "idle_busy_pct": round(idle_pct, 1),
        "idle_hogs": hogs,
        "foreign_procs": foreign[:5],
        "kernel_threads_cpu_s": sum(f["cpu_s"] for f in kthreads),
        "foreign_cpu_s": sum(f["cpu_s"] for f in foreign),
        "rc": rc,
        "ingress_s": t_src - t0,                      # start of send .. send done
        "timed_out": timed_out, "stalled": stalled,
        "stalled_at": rec["delivered"] if (timed_out or stalled) else None,
        "queue_before": q_before, "queue_after": q_after,
        "drain_s": round(max(0.0, t_empty - t_last), 2) if (t_last and a.queue_cmd) else 0.0,
        "client_cpu_s": ru.ru_utime + ru.ru_stime,
        "server_cpu_s": (relay1 - relay0) / CLK_TCK,
        "sink_cpu_s": (sink1 - sink0) / CLK_TCK,
        "server_alive": alive,
        "machine_busy_pct": round(100.0 * (sys1[0] - sys0[0]) / max(1, sys1[1] - sys0[1]), 1),
        "machine_busy_cpu_s": (sys1[0] - sys0[0]) / CLK_TCK,
        "sink_rc": sink_rc, "sink_conns_left": left,
    })
    print(json.dumps(rec))
    return 0


# ---------------------------------------------------------------- TLS (bench/relay.sh --tls)

def tls_hs_cost_ms(r, raw):
    """The run's handshakes priced at the in-memory rate of crypto/tls.h (server side
    for the inbound ones, client side for the outbound ones), ms per message; None
    without both raw figures."""
    full, res = raw.get("full"), raw.get("resume")
    if not full or not res or r.get("in_hs_full") is None or r.get("out_hs_full") is None:
        return None
    us = (r["in_hs_full"] * full["server"]["us_per_handshake"]
          + r["in_hs_resumed"] * res["server"]["us_per_handshake"]
          + r["out_hs_full"] * full["client"]["us_per_handshake"]
          + r["out_hs_resumed"] * res["client"]["us_per_handshake"])
    return us / 1000.0 / r["n"]


def tls_cell(rs, raw):
    """Median TLS figures of one path × size over its completed runs."""
    good = [r for r in rs if r.get("wall_s") and r.get("in_hs_full") is not None]
    if not good:
        return None
    med = lambda f: statistics.median([f(r) for r in good])  # noqa: E731
    out_conns = lambda r: max(0, (r.get("sink_sessions") or 0) - 1)  # noqa: E731
    cell = {
        "runs": len(good),
        "in_full": med(lambda r: r["in_hs_full"]), "in_resumed": med(lambda r: r["in_hs_resumed"]),
        "in_per_s": med(lambda r: (r["in_hs_full"] + r["in_hs_resumed"]) / r["wall_s"]),
        "out_conns": med(out_conns),
        "out_full": med(lambda r: r["out_hs_full"]), "out_resumed": med(lambda r: r["out_hs_resumed"]),
        "out_per_s": med(lambda r: (r["out_hs_full"] + r["out_hs_resumed"]) / r["wall_s"]),
        "msgs_per_out_conn": med(lambda r: r["n"] / out_conns(r) if out_conns(r) else 0),
        "versions": sorted({r.get("in_tls_version") or "?" for r in good}),
        "tls_p50_ms": med(lambda r: r.get("tls_p50_ms") or 0),
        "tls_p99_ms": med(lambda r: r.get("tls_p99_ms") or 0),
    }
    costs = [tls_hs_cost_ms(r, raw) for r in good]
    if all(c is not None for c in costs):
        cell["hs_cost_ms"] = statistics.median(costs)
    return cell


def tls_section(L, rows, runs, meta):
    """The handshake table, the raw figure and the comparison of the two."""
    raw = meta.get("tls_raw") or {}
    L.append("### TLS handshakes")
    L.append("")
    L.append("Per run (median over the repetitions): inbound = `postseal-bench send` → relay, as the sender "
             "counted them; outbound = relay → sink, as the sink counted them (its sessions but the "
             "harness's probe). Handshakes/s = handshakes / e2e s. Handshake CPU estimate: see the "
             "notes; \"share\" = of the relay's measured CPU ms/msg.")
    L.append("")
    L.append("| size | path | inbound full / resumed | inbound hs/s | outbound connections | outbound full / resumed "
             "| outbound hs/s | msgs per outbound conn | sender's TLS p50 / p99 ms | relay CPU ms/msg "
             "| handshake CPU estimate ms/msg (share) |")
    L.append("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        for srv in ("direct", "postseald", "postfix"):
            x = row.get(srv)
            c = tls_cell([r for r in runs if r["server"] == srv and r["size"] == row["size"]], raw)
            if not x or not c:
                continue
            x["tls"] = c
            cpu = x.get("cpu_ms_per_msg")
            est = "–"
            if srv != "direct" and "hs_cost_ms" in c:
                share = f" ({100.0 * c['hs_cost_ms'] / cpu['median']:.0f}%)" if cpu and cpu["median"] else ""
                est = f"{c['hs_cost_ms']:.3f}{share}"
            L.append(f"| {row['size']} B | {srv} | {fmt(c['in_full'])} / {fmt(c['in_resumed'])} | "
                     f"{fmt(c['in_per_s'])} | {fmt(c['out_conns'])} | {fmt(c['out_full'])} / {fmt(c['out_resumed'])} | "
                     f"{fmt(c['out_per_s'])} | {fmt(c['msgs_per_out_conn'], 1)} | "
                     f"{c['tls_p50_ms']:.2f} / {c['tls_p99_ms']:.2f} | "
                     f"{fmt(cpu['median'], 3) if srv != 'direct' and cpu else '–'} | {est} |")
    L.append("")
    vers = sorted({r.get("in_tls_version") for r in runs if r.get("in_tls_version")})
    ciph = sorted({r.get("in_tls_cipher") for r in runs if r.get("in_tls_cipher")})
    if vers:
        L.append(f"Inbound protocol: {', '.join(vers)} ({', '.join(ciph)}), as the sender reported it.")
        L.append("")
    L.append("### Raw figure: crypto/tls.h (BoringSSL) handshakes in memory, one core")
    L.append("")
    if not raw.get("full") and not raw.get("resume"):
        L.append("Not measured (postseal-bench tls-handshake did not run or failed; see Problems).")
        L.append("")
        return
    L.append("`postseal-bench tls-handshake` with the run's certificate: a client and a server adapter "
             "against each other on one thread, no sockets; the fastest of the runs (all runs' pairs/s in "
             "the last column). Pairs/s = both sides on one core; each side's own figure = 1 / its time "
             "per handshake.")
    L.append("")
    L.append("| handshake | handshakes | pairs/s on one core | server side µs | server side handshakes/s per core "
             "| client side µs | client side handshakes/s per core | server → client octets | protocol | every run, pairs/s |")
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |")
    for key, label in (("full", "full"), ("resume", "resumed")):
        x = raw.get(key)
        if not x:
            continue
        every = ", ".join(fmt(v) for v in (raw.get("runs") or {}).get(key, []))
        L.append(f"| {label} | {x['handshakes']:,} | {fmt(x['pairs_per_s'])} | {x['server']['us_per_handshake']:.1f} | "
                 f"{fmt(x['server']['per_core_s'])} | {x['client']['us_per_handshake']:.1f} | "
                 f"{fmt(x['client']['per_core_s'])} | {fmt(x['server']['bytes_sent'])} | "
                 f"{x['version']} {x['cipher']} | {every} |")
    L.append("")
    cores = int(meta.get("nproc") or 1)
    lines = []
    for row in rows:
        c = (row.get("postseald") or {}).get("tls")
        if c and raw.get("full") and raw.get("resume"):
            srv_cap = raw["resume"]["server"]["per_core_s"]
            lines.append(f"{row['size']} B: postseald completed {fmt(c['in_per_s'])} inbound handshakes/s "
                         f"({fmt(c['in_resumed'])} of {fmt(c['in_full'] + c['in_resumed'])} resumed) and "
                         f"{fmt(c['out_per_s'])} outbound; the raw server-side rate for resumed handshakes is "
                         f"{fmt(srv_cap)}/s per core, {fmt(srv_cap * cores)}/s on this machine's {cores} cores")
    if lines:
        L.append("Measured against raw: " + "; ".join(lines) + ".")
        L.append("")
    if meta.get("openssl_speed"):
        L.append(f"Context, Postfix's library ({meta.get('openssl_version', 'OpenSSL')}): `openssl speed -seconds 3 "
                 "ecdsap256 ecdhx25519` (the signature of a full handshake with this certificate, and the key "
                 "exchange of every TLS 1.3 handshake, full or resumed):")
        L.append("")
        L.append("```")
        L.append(meta["openssl_speed"].rstrip())
        L.append("```")
        L.append("")


def cmd_relayreport(a):
    meta = json.load(open(a.meta))
    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    sizes = sorted({r["size"] for r in runs})
    servers = ["direct", "postseald", "postfix"]
    tgt_pct, tgt_cpu = meta.get("target_pct", 60.0), meta.get("target_cpu_ms", 0.2)
    summary = {"meta": {k: meta[k] for k in meta if k not in (
        "commands", "notes", "postseald_config", "postfix_main_cf", "postfix_master_cf",
        "problems", "warnings")}, "relay": [], "problems": list(meta.get("problems", []))}
    ok_runs = lambda rs: [r for r in rs if r.get("wall_s")]
    pb = meta.get("driver") == "postseal-bench"
    src, snk = ("postseal-bench send", "postseal-bench sink") if pb else ("smtp-source", "smtp-sink")
    rows = []
    for size in sizes:
        row = {"size": size}
        for srv in servers:
            rs = [r for r in runs if r["server"] == srv and r["size"] == size]
            if not rs:
                row[srv] = None
                continue
            good = ok_runs(rs)
            lat = lambda k: summarize([r[k] for r in good if r.get(k) is not None])  # noqa: E731
            row[srv] = {
                "messages": rs[0]["n"], "sessions": rs[0]["sessions"], "reps": len(rs),
                "completed": len(good),
                "msg_per_s": summarize([r["n"] / r["wall_s"] for r in good]),
                "ingress_msg_per_s": summarize([r["n"] / r["ingress_s"] for r in good]),
                "cpu_ms_per_msg": summarize([r["server_cpu_s"] * 1000.0 / r["n"] for r in good]) if srv != "direct" else None,
                "sink_cpu_ms_per_msg": summarize([r["sink_cpu_s"] * 1000.0 / r["n"] for r in good]),
                "client_cpu_ms_per_msg": summarize([r["client_cpu_s"] * 1000.0 / r["n"] for r in good]),
                "counts_ok": all(r["delivered"] == r["n"] and r["queue_after"] == 0
                                 and r.get("send_accepted", r["n"]) == r["n"] for r in rs),
                "duplicates": sum(r["duplicates"] for r in rs),
                "load_ok": all(r["rc"] == 0 for r in rs),
                "smtp_source_ok": all(r["rc"] == 0 for r in rs),     # the name before --driver
            }
            if pb:
                row[srv].update(eod_p50_ms=lat("eod_p50_ms"), eod_p99_ms=lat("eod_p99_ms"),
                                msg_p50_ms=lat("msg_p50_ms"), msg_p99_ms=lat("msg_p99_ms"))
        d = row.get("direct")
        for srv in ("postseald", "postfix"):
            x = row.get(srv)
            if x and x["msg_per_s"] and d and d["msg_per_s"]:
                x["pct_of_direct"] = 100.0 * x["msg_per_s"]["median"] / d["msg_per_s"]["median"]
        ps, pf = row.get("postseald"), row.get("postfix")
        if ps and pf and ps["msg_per_s"] and pf["msg_per_s"]:
            row["throughput_ratio"] = ps["msg_per_s"]["median"] / pf["msg_per_s"]["median"]
            row["cpu_ratio"] = ps["cpu_ms_per_msg"]["median"] / pf["cpu_ms_per_msg"]["median"] \
                if pf["cpu_ms_per_msg"]["median"] else None
        if ps and ps["msg_per_s"]:
            row["target_met"] = {
                "pct_of_direct": (ps["pct_of_direct"] >= tgt_pct) if "pct_of_direct" in ps else None,
                "cpu_ms_per_msg": ps["cpu_ms_per_msg"]["median"] <= tgt_cpu}
        rows.append(row)
    summary["relay"] = rows
    summary["warnings"] = meta.get("warnings", [])

    def thr(x, key="msg_per_s"):
        if not x or not x.get(key):
            return "n/a"
        m = x[key]
        return f"{fmt(m['median'])} ({fmt(m['min'])}–{fmt(m['max'])})"

    def cpu_s(x):
        if not x or not x.get("cpu_ms_per_msg"):
            return "n/a"
        m = x["cpu_ms_per_msg"]
        return f"{fmt(m['median'], 3)} ({fmt(m['min'], 3)}–{fmt(m['max'], 3)})"

    def pct(x):
        return f"{x['pct_of_direct']:.0f}%" if x and "pct_of_direct" in x else "n/a"

    def ms(x, key):
        if not x or not x.get(key):
            return "n/a"
        m = x[key]
        return f"{m['median']:.2f} ({m['min']:.2f}–{m['max']:.2f})"

    L = []
    tls = meta.get("tls")
    if tls:
        L.append(f"# SMTP relay over TLS on both legs: postseald vs Postfix {meta.get('postfix_version', '')} — {meta['date']}")
    else:
        L.append(f"# SMTP relay end to end: postseald vs Postfix {meta.get('postfix_version', '')} — {meta['date']}")
    L.append("")
    if meta.get("smoke"):
        L.append("**Smoke run** (one size, small N, one repetition, postseald only, no idle wait): "
                 "numbers are a sanity check, not a measurement.")
        L.append("")
    if tls:
        L.append("Generated by `bench/relay.sh --tls`. Path: `postseal-bench send --starttls"
                 + (" --tls-resume" if meta.get("tls_resume") else "") + "` → relay (STARTTLS offered) → "
                 "`postseal-bench sink --tls-cert --tls-key` (STARTTLS offered, the relay must use it), "
                 "all on 127.0.0.1: TLS on both legs, every session checked. A run is timed from the start of "
                 "postseal-bench send until the sink's last 250 (the sink's report, anchored by the "
                 "harness's probe session). \"direct\" is postseal-bench send → postseal-bench sink over TLS "
                 "with no relay: the ceiling of this load generator and sink on this machine. The raw "
                 "handshake rate of the TLS adapter (BoringSSL, in memory) is below the results.")
    elif pb:
        L.append("Generated by `bench/relay.sh --driver postseal-bench`. Path: `postseal-bench send` → "
                 "relay → `postseal-bench sink` (all on 127.0.0.1). A run is timed from the start of "
                 "postseal-bench send until the sink's last 250: every run has a fresh sink, whose first "
                 "session is the harness's probe, and whose report gives the time from that session to "
                 "its last accepted message (`active_s`, CLOCK_MONOTONIC like the harness). "
                 "\"direct\" is postseal-bench send → postseal-bench sink with no relay: the ceiling of "
                 "this load generator and sink on this machine.")
    else:
        L.append("Generated by `bench/relay.sh`. Path: `smtp-source` → relay → Postfix `smtp-sink` "
                 "(all on 127.0.0.1). A run is timed from the start of smtp-source (its first "
                 "connection) until the sink's message counter (`smtp-sink -c`) has gone up by N. "
                 "\"direct\" is smtp-source → smtp-sink with no relay: the ceiling of this load "
                 "generator and sink on this machine.")
    L.append("")
    machine_section(L, meta, "load tool and sink")
    L.append("## Results")
    L.append("")
    common = ("Relay CPU ms/msg = relay CPU (user+system) from the start of the run until its queue is "
              "empty again, / N (receiving, queueing and relaying). % of direct = median relay rate / "
              "median direct rate at the same size, measured in this same invocation. Ratios are "
              "postseald / Postfix.")
    if pb:
        per = meta.get("per_conn", 1)
        shape = ("one message per connection" if per == 1 else f"up to {per} messages per connection"
                 if per else "connections reused for every message")
        tls_opts = (" --starttls" + (" --tls-resume" if meta.get("tls_resume") else "")) if tls else ""
        L.append(f"Load: `postseal-bench send --connections {meta['sessions']} --count N --size SIZE "
                 f"--per-conn {per}{tls_opts}` ({meta['sessions']} concurrent sessions, {shape}, one recipient, "
                 "closed loop, no PIPELINING; SIZE is the body, the tool adds about 190 octets of header). "
                 f"{meta['reps']} repetition(s) per cell after a warm-up run; median (min–max). "
                 "End-to-end msg/s = N / (start of the sender → the sink's last 250). EOD p50/p99 = "
                 "end of DATA → the relay's 250 as the sender saw it (postseal-bench send's "
                 "`latency_us.data`: from handing the body to the socket to the final reply), over the "
                 "N messages of a run, then median (min–max) over the repetitions; the load is closed "
                 "loop at full speed, so this includes the time a message waits inside the relay. "
                 + common)
    else:
        L.append(f"Load: `smtp-source -s {meta['sessions']} -m N -l SIZE` ({meta['sessions']} concurrent "
                 "sessions, one message per connection, one recipient). "
                 f"{meta['reps']} repetition(s) per cell after a warm-up run; median (min–max). "
                 "End-to-end msg/s = N / (first connection → sink has N). " + common)
    L.append("")
    L.append("| size | N | direct msg/s | postseald msg/s | Postfix msg/s | ratio | postseald % of direct | Postfix % of direct | postseald CPU ms/msg | Postfix CPU ms/msg | CPU ratio |"
             + (" postseald EOD p50 ms | postseald EOD p99 ms | Postfix EOD p50 ms | Postfix EOD p99 ms |" if pb else ""))
    L.append("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" * 4 if pb else ""))
    for row in rows:
        d, ps, pf = row.get("direct"), row.get("postseald"), row.get("postfix")
        n = (ps or pf or d)["messages"]
        tr = f"{row['throughput_ratio']:.2f}×" if row.get("throughput_ratio") else "n/a"
        cr = f"{row['cpu_ratio']:.2f}×" if row.get("cpu_ratio") else "n/a"
        L.append(f"| {row['size']} B | {n} | {thr(d)} | {thr(ps)} | {thr(pf)} | {tr} | {pct(ps)} | {pct(pf)} | {cpu_s(ps)} | {cpu_s(pf)} | {cr} |"
                 + (f" {ms(ps, 'eod_p50_ms')} | {ms(ps, 'eod_p99_ms')} | {ms(pf, 'eod_p50_ms')} | {ms(pf, 'eod_p99_ms')} |" if pb else ""))
    L.append("")
    chart_lines(L, a)
    tl = []
    for row in rows:
        t = row.get("target_met")
        if not t:
            continue
        ps = row["postseald"]
        a1 = "n/a (no direct run)" if t["pct_of_direct"] is None else \
            f"{ps['pct_of_direct']:.0f}% {'✔' if t['pct_of_direct'] else '✘'}"
        a2 = f"{ps['cpu_ms_per_msg']['median']:.3f} ms {'✔' if t['cpu_ms_per_msg'] else '✘'}"
        tl.append(f"{row['size']} B: {a1}, {a2}")
    if tl and not tls:  # the targets are for plaintext relaying
        L.append(f"Delivery-issue targets for postseald (≥ {tgt_pct:g}% of direct, ≤ {tgt_cpu:g} ms CPU per "
                 "relayed message): " + "; ".join(tl) + ".")
        L.append("")
    L.append(f"Ingress rate (N / {src} wall time; the relay may accept faster than it delivers), "
             "median msg/s: " + "; ".join(
                 f"{row['size']} B: " + ", ".join(f"{s} {fmt(row[s]['ingress_msg_per_s']['median'])}"
                                                 for s in servers if row.get(s) and row[s].get("ingress_msg_per_s"))
                 for row in rows) + ".")
    L.append("")
    L.append(f"Sink CPU ({snk}, ms/msg, median): " + "; ".join(
        f"{row['size']} B: " + ", ".join(f"{s} {fmt(row[s]['sink_cpu_ms_per_msg']['median'], 3)}"
                                        for s in servers if row.get(s) and row[s].get("sink_cpu_ms_per_msg"))
        for row in rows) + f". Load tool CPU ({src}, ms/msg, median): " + "; ".join(
        f"{row['size']} B: " + ", ".join(f"{s} {fmt(row[s]['client_cpu_ms_per_msg']['median'], 3)}"
                                        for s in servers if row.get(s) and row[s].get("client_cpu_ms_per_msg"))
        for row in rows) + ".")
    L.append("")
    allok = all(r["delivered"] == r["n"] and r["queue_after"] == 0 and r.get("wall_s")
                and r.get("send_accepted", r["n"]) == r["n"] for r in runs)
    L.append(("Every run was checked: the sender got 250 for all N, the sink's report counted exactly N "
              "(more = duplicates), and " if pb else
              "Every run was checked: the sink's counter went up by exactly N (more = duplicates), and ")
             + "the relay's queue was empty afterwards (postseald: `postseal queue list --json`; Postfix: "
             "no file under incoming/active/deferred/hold/maildrop). "
             + ("**All counts matched, no duplicates, every queue drained.**" if allok
                else "**MISMATCHES — see Problems.**"))
    L.append("")
    if tls:
        tls_section(L, rows, runs, meta)
    L.append("### Per run")
    L.append("")
    if pb:
        L.append("e2e s = start of postseal-bench send → the sink's last 250; ingress s = postseal-bench send "
                 "wall time; drain s = time after the sink's last 250 until the relay's queue listed empty "
                 "(listed every 0.2 s once the sender is done, so up to 0.2 s late, plus the listing itself); "
                 "EOD = end of DATA → 250 at the sender, ms. Machine busy and CPU figures as in ingress.sh "
                 "(kernel threads = kworker/ksoftirqd/jbd2..., other processes = not part of the benchmark), "
                 "from the start of the sender until the queue listed empty.")
    else:
        L.append("e2e s = first connection → sink has N; ingress s = smtp-source wall time; drain s = time "
                 "after the sink had N until the relay's queue listed empty (includes the time of the listing "
                 "command). Machine busy and CPU figures as in ingress.sh (kernel threads = kworker/ksoftirqd/"
                 "jbd2..., other processes = not part of the benchmark), over the e2e interval.")
    L.append("")
    L.append(f"| path | size | rep | N | e2e s | e2e msg/s | ingress s | drain s | relay CPU s | relay CPU ms/msg | sink CPU s | {src} CPU s | kernel threads CPU s | other processes CPU s | machine busy | delivered | dup | queue after | rc |"
             + (" EOD p50 ms | EOD p99 ms |" if pb else "")
             + (" in TLS full / resumed | out conns | out TLS full / resumed |" if tls else ""))
    L.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
             + (" ---: | ---: |" if pb else "") + (" ---: | ---: | ---: |" if tls else ""))
    for r in runs:
        w = r.get("wall_s")
        e2e = f"{w:.2f}" if w else ("TIMEOUT" if r.get("timed_out") else "STALLED")
        rate = f"{r['n'] / w:,.0f}" if w else "n/a"
        rcpu = f"{r['server_cpu_s']:.2f}" if r["server"] != "direct" else "–"
        rcpum = f"{r['server_cpu_s'] * 1000 / r['n']:.3f}" if r["server"] != "direct" else "–"
        other = f"{r.get('foreign_cpu_s', 0):.2f}"
        if r.get("foreign_procs"):
            other += " (" + ", ".join(x["comm"] for x in r["foreign_procs"]) + ")"
        qa = r["queue_after"] if r["queue_after"] is not None else "ERR"
        L.append(f"| {r['server']} | {r['size']} | {r['rep']} | {r['n']} | {e2e} | {rate} | "
                 f"{r['ingress_s']:.2f} | {r['drain_s']:.2f} | {rcpu} | {rcpum} | "
                 f"{r['sink_cpu_s']:.2f} | {r['client_cpu_s']:.2f} | {r.get('kernel_threads_cpu_s', 0):.2f} | "
                 f"{other} | {r.get('machine_busy_pct', 0):.0f}% | {r['delivered']} | {r['duplicates']} | "
                 f"{qa} | {r['rc']} |"
                 + (f" {fmt(r.get('eod_p50_ms'), 2)} | {fmt(r.get('eod_p99_ms'), 2)} |" if pb else "")
                 + (f" {fmt(r.get('in_hs_full'))} / {fmt(r.get('in_hs_resumed'))} | "
                    f"{fmt(max(0, (r.get('sink_sessions') or 0) - 1))} | "
                    f"{fmt(r.get('out_hs_full'))} / {fmt(r.get('out_hs_resumed'))} |" if tls else ""))
    L.append("")
    report_tail(L, summary, meta,
                (f"None: every {src} run exited 0, the sink counted exactly N every time, every relay "
                 "queue drained, the servers stayed up."))
    with open(a.md, "w") as f:
        f.write("\n".join(L))
    summary["results_file"] = a.md
    summary["chart"] = a.chart or None
    summary["chart_note"] = a.chart_note
    print(json.dumps(summary, indent=None))


# ---------------------------------------------------------------- chart (both scripts)

# per script: (server key in runs.jsonl, legend, colour); the colours stay with the
# path whichever paths ran
CHART_PATHS = {
    "relay": [("direct", "direct (no relay)", "#9e9e9e"), ("postseald", "postseald", "#1f77b4"),
              ("postfix", "Postfix", "#ff7f0e")],
    "ingress": [("postseald", "postseald", "#1f77b4"), ("postfix", "Postfix", "#ff7f0e")],
}


def size_label(n):
    if n >= 1048576 and n % 1048576 == 0:
        return f"{n // 1048576} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} B"


def gp_str(text):
    """A gnuplot double-quoted string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def chart_title(kind, meta, runs):
    ns = sorted({r["n"] for r in runs})
    n = ns[0] if len(ns) == 1 else "/".join(str(x) for x in ns)
    if kind == "relay" and meta.get("tls"):
        first = "SMTP relay end to end, STARTTLS on both legs (postseal-bench send → relay → postseal-bench sink)"
    elif kind == "relay":
        load = ("postseal-bench send → relay → postseal-bench sink" if meta.get("driver") == "postseal-bench"
                else "smtp-source → relay → smtp-sink")
        first = f"SMTP relay end to end ({load})"
    else:
        first = f"SMTP ingress: smtp-source{' -d' if meta.get('reuse') else ''} → server (250 once the message is on stable storage)"
    second = (f"N = {n} per run, {meta.get('sessions')} sessions, {meta.get('reps')} repetition(s); "
              f"bar = median, whiskers = min–max; {meta.get('nproc')} cores, loopback")
    if meta.get("smoke"):
        second += "; SMOKE RUN, not a measurement"
    return first + "\n" + second


def cmd_chart(a):
    """Grouped bars of msg/s (median, min–max) per size and path, as a PNG by gnuplot."""
    import tempfile
    meta = json.load(open(a.meta))
    runs = [json.loads(l) for l in open(a.runs) if l.strip()]
    done = [r for r in runs if r.get("wall_s")]
    paths = [p for p in CHART_PATHS[a.kind] if any(r["server"] == p[0] for r in done)]
    if not paths:
        print("benchlib chart: no completed run to draw", file=sys.stderr)
        return 1
    rows = []
    for size in sorted({r["size"] for r in done}):
        cells = [size_label(size)]
        for key, _, _ in paths:
            v = [r["n"] / r["wall_s"] for r in done if r["server"] == key and r["size"] == size]
            cells += [f"{statistics.median(v):.1f}", f"{min(v):.1f}", f"{max(v):.1f}"] if v else ["-"] * 3
        rows.append("\t".join(cells))
    ylabel = ("messages/s end to end (N / start of the load → sink has N)" if a.kind == "relay"
              else "messages/s accepted (N / smtp-source wall time)")
    tmp_png = a.png + ".tmp"
    with tempfile.TemporaryDirectory(prefix="postseal-chart.") as d:
        dat, gp = os.path.join(d, "chart.dat"), os.path.join(d, "chart.gp")
        with open(dat, "w") as f:
            f.write("\n".join(rows) + "\n")
        with open(gp, "w") as f:
            f.write(f"datafile = {gp_str(dat)}\noutfile = {gp_str(tmp_png)}\n"
                    f"npaths = {len(paths)}\n"
                    + "".join(f"title{i} = {gp_str(p[1])}\ncolor{i} = {gp_str(p[2])}\n"
                              for i, p in enumerate(paths, 1))
                    + f"nrows = {len(rows)}\n"
                    f"charttitle = {gp_str(chart_title(a.kind, meta, done))}\n"
                    f"ylabel_text = {gp_str(ylabel)}\n"
                    f"load {gp_str(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'chart.gp'))}\n")
        try:
            r = subprocess.run([a.gnuplot, gp], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            print(f"benchlib chart: {a.gnuplot}: {e}", file=sys.stderr)
            return 1
    if r.returncode != 0 or not os.path.exists(tmp_png):
        print(f"benchlib chart: gnuplot exited {r.returncode}: {r.stderr.strip()[-500:]}", file=sys.stderr)
        if os.path.exists(tmp_png):
            os.unlink(tmp_png)
        return 1
    os.replace(tmp_png, a.png)
    return 0


def chart_lines(L, a):
    """The chart link (or why there is none) for a results file."""
    if a.chart:
        L.append(f"![msg/s by message size, median with min–max]({os.path.relpath(a.chart, os.path.dirname(os.path.abspath(a.md)))})")
        L.append("")
    elif a.chart_note:
        L.append(f"Chart: {a.chart_note}.")
        L.append("")


def report_tail(L, summary, meta, none_text):
    """Problems, warnings, notes, commands and configurations: the closing
    sections every results file has."""
    L.append("## Problems")
    L.append("")
    if summary["problems"]:
        for p in summary["problems"]:
            L.append(f"- **{p}**")
    else:
        L.append(none_text)
    L.append("")
    if meta.get("warnings"):
        L.append("## Warnings (measurement quality)")
        L.append("")
        for w in meta["warnings"]:
            L.append(f"- {w}")
        L.append("")
    L.append("## Set-up and caveats")
    L.append("")
    for n in meta.get("notes", []):
        L.append(f"- {n}")
    L.append("")
    L.append("## Commands run")
    L.append("")
    L.append("```")
    L.extend(meta.get("commands", []))
    L.append("```")
    L.append("")
    for key, title, lang in [("postseald_config", "postseald configuration:", "yaml"),
                             ("postfix_main_cf", "Postfix main.cf (private instance):", ""),
                             ("postfix_master_cf", "Postfix master.cf (private instance):", "")]:
        if meta.get(key):
            L.append(title)
            L.append("")
            L.append("```" + lang)
            L.append(meta[key].rstrip())
            L.append("```")
            L.append("")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="sub", required=True)
    p = sub.add_parser("freeport")
    p.add_argument("--low", action="store_true", help="below the ephemeral port range")
    p = sub.add_parser("waitsmtp"); p.add_argument("port", type=int); p.add_argument("timeout", type=float)
    p = sub.add_parser("cpu"); p.add_argument("mode", choices=["proc", "tree"]); p.add_argument("pid", type=int)
    p = sub.add_parser("rss"); p.add_argument("pid", type=int)
    p = sub.add_parser("waitidle")
    p.add_argument("--max-busy", type=float, default=10.0)
    p.add_argument("--timeout", type=float, default=300.0)
    p = sub.add_parser("run")
    p.add_argument("--mode", choices=["proc", "tree"], required=True)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--max-busy", type=float, default=10.0, help="wait until the machine is below this %% busy")
    p.add_argument("--idle-timeout", type=float, default=300.0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("idle")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=5000)
    p.add_argument("--hold", type=float, default=1.0)
    p.add_argument("--timeout", type=float, default=60.0)
    p = sub.add_parser("report")
    p.add_argument("--runs", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--chart", default="", help="the PNG to link from the results file")
    p.add_argument("--chart-note", default="", help="why there is no chart")
    p = sub.add_parser("relayrun")
    p.add_argument("--mode", choices=["proc", "tree", "none"], required=True,
                   help="relay CPU accounting; none = no relay (direct to the sink)")
    p.add_argument("--pid", type=int, default=0, help="relay process (postseald, or Postfix master)")
    p.add_argument("--sink-pid", type=int, required=True)
    p.add_argument("--sink-out", required=True, help="stdout of smtp-sink -c")
    p.add_argument("--expect", type=int, required=True, help="messages the sink must receive")
    p.add_argument("--queue-cmd", default="", help="command listing the relay's queue, one line per message")
    p.add_argument("--log", required=True)
    p.add_argument("--timeout", type=float, default=600.0, help="whole run, seconds")
    p.add_argument("--stall", type=float, default=120.0, help="give up after this long without a delivery")
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument("--poll", type=float, default=0.005)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--max-busy", type=float, default=10.0)
    p.add_argument("--idle-timeout", type=float, default=300.0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("pbrelayrun")
    p.add_argument("--mode", choices=["proc", "tree", "none"], required=True,
                   help="relay CPU accounting; none = no relay (direct to the sink)")
    p.add_argument("--pid", type=int, default=0, help="relay process (postseald, or Postfix master)")
    p.add_argument("--sink-cmd", required=True, help="the postseal-bench sink command line (started per run)")
    p.add_argument("--sink-port", type=int, required=True)
    p.add_argument("--sink-report", required=True, help="the sink's --report file")
    p.add_argument("--sink-log", required=True)
    p.add_argument("--send-json", required=True, help="the sender's --json file")
    p.add_argument("--expect", type=int, required=True, help="messages the sink must receive")
    p.add_argument("--queue-cmd", default="", help="command listing the relay's queue, one line per message")
    p.add_argument("--log", required=True)
    p.add_argument("--timeout", type=float, default=600.0, help="whole run, seconds")
    p.add_argument("--stall", type=float, default=120.0, help="give up after this long without queue progress")
    p.add_argument("--poll", type=float, default=0.2, help="queue listing interval while it drains")
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--close-timeout", type=float, default=10.0,
                   help="wait this long for the relay to close its connections to the sink")
    p.add_argument("--max-busy", type=float, default=10.0)
    p.add_argument("--idle-timeout", type=float, default=300.0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    p = sub.add_parser("relayreport")
    p.add_argument("--runs", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--md", required=True)
    p.add_argument("--chart", default="", help="the PNG to link from the results file")
    p.add_argument("--chart-note", default="", help="why there is no chart")
    p = sub.add_parser("chart")
    p.add_argument("--kind", choices=sorted(CHART_PATHS), required=True)
    p.add_argument("--runs", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--png", required=True)
    p.add_argument("--gnuplot", default="gnuplot")
    a = ap.parse_args()
    fn = {"freeport": cmd_freeport, "waitsmtp": cmd_waitsmtp, "cpu": cmd_cpu, "rss": cmd_rss,
          "run": cmd_run, "waitidle": cmd_waitidle, "idle": cmd_idle, "report": cmd_report,
          "relayrun": cmd_relayrun, "pbrelayrun": cmd_pbrelayrun, "relayreport": cmd_relayreport,
          "chart": cmd_chart}[a.sub]
    return fn(a) or 0


if __name__ == "__main__":
    sys.exit(main())
