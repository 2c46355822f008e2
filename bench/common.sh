# Shared by bench/ingress.sh and bench/relay.sh; sourced, never run.
#
# The sourcing script sets BENCH_NAME (ingress|relay) before sourcing (and may set
# RESULTS_NAME, the results file's name before the date; default BENCH_NAME), and after
# parsing its options calls, in order: check_postseald_bin (unless it skips
# postseald), require_smtp_tool, require_postfix_instance (if it runs Postfix),
# setup_scratch, then postseald_build_info and bench_prelude; at the end write_meta and
# finish, which draws the chart (write_chart) and writes the results file.
#
# Hooks the script may redefine after sourcing (defaults do nothing):
#   start_log_suffix        text appended to the "postseald/Postfix up" log lines
#   postseald_yaml_extra    lines appended to the postseald YAML
#   postfix_after_start     runs once Postfix answers, before the "up" log line
#   cleanup_extra           runs in the EXIT trap after postseald and Postfix stop
#   report_extra            runs once the results file ($OUT) is written, before the
#                           exit status; may add to it (nothing on stdout: the summary)
# and must define postfix_main_cf (prints main.cf) if it starts Postfix;
# PF_MASTER_EXTRA holds extra master.cf lines (after proxymap).

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
LIB="/usr/bin/python3 $BENCH_DIR/benchlib.py"
PY=/usr/bin/python3

POSTSEALD=${POSTSEALD:-$REPO/build/postseald}
PF_MASTER_EXTRA=""

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

# die MESSAGE: a usage/set-up error, exit 2
die() { echo "$BENCH_NAME.sh: $*" >&2; exit 2; }

# check_numbers V...: every V a positive integer
check_numbers() {
    local v
    for v in "$@"; do
        [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 1 ] || die "bad number '$v'"
    done
}

# POSTSEALD made absolute, POSTSEAL_CLI and POSTSEAL_BENCH defaulted (always); the
# -x checks only if asked
resolve_postseald() {
    case "$POSTSEALD" in /*) ;; *) POSTSEALD=$PWD/$POSTSEALD ;; esac
    POSTSEAL_CLI=${POSTSEAL_CLI:-$(dirname "$POSTSEALD")/postseal}
    POSTSEAL_BENCH=${POSTSEAL_BENCH:-$(dirname "$POSTSEALD")/postseal-bench}
}
check_postseald_bin() {
    [ -x "$POSTSEALD" ] || die "no postseald at $POSTSEALD (build it, or set POSTSEALD)"
    [ -x "$POSTSEAL_CLI" ] || die "no postseal CLI at $POSTSEAL_CLI (set POSTSEAL_CLI)"
}
check_postseal_bench_bin() {
    [ -x "$POSTSEAL_BENCH" ] || die "no postseal-bench at $POSTSEAL_BENCH (build it, or set POSTSEAL_BENCH)"
}
require_smtp_tool() {   # smtp-source | smtp-sink
    command -v "$1" >/dev/null || die "$1 not found (apt-get install postfix)"
}
require_postfix_instance() {
    command -v postfix >/dev/null || die "postfix not found"
    [ "$(id -u)" = 0 ] || die "a private Postfix instance needs root (or use --no-postfix)"
    id postfix >/dev/null 2>&1 || die "no 'postfix' user"
}

# setup_scratch TMP_PREFIX: IDLE_TIMEOUT, DATE, OUT, TMP and its record files
setup_scratch() {
    # Waiting for an idle machine makes measurements fair on a shared box; a
    # smoke run (CI, tests running beside it) only checks that the harness works.
    IDLE_TIMEOUT=300
    [ "$SMOKE" = 1 ] && IDLE_TIMEOUT=0

    DATE=$(date -u +%Y-%m-%d)
    [ -n "$OUT" ] || { [ "$SMOKE" = 1 ] || OUT=$BENCH_DIR/results/${RESULTS_NAME:-$BENCH_NAME}-$DATE.md; }

    TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/$1.XXXXXX")
    chmod 755 "$TMP"                       # Postfix daemons (user postfix) must traverse it
    [ -n "$OUT" ] || OUT=$TMP/$BENCH_NAME-smoke-$DATE.md
    : > "$TMP/runs.jsonl"; : > "$TMP/commands.txt"; : > "$TMP/problems.txt"; : > "$TMP/notes.txt"; : > "$TMP/warnings.txt"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

PS_PID=""; PF_ETC=""; PF_MASTER=""
log() { echo "[$BENCH_NAME $(date +%T)] $*" >&2; }
problem() { echo "$*" >> "$TMP/problems.txt"; log "PROBLEM: $*"; }
note() { echo "$*" >> "$TMP/notes.txt"; }
warn() { echo "$*" >> "$TMP/warnings.txt"; log "WARNING: $*"; }
record() { echo "$*" >> "$TMP/commands.txt"; }

stop_postseald() {
    [ -n "$PS_PID" ] || return 0
    local pid=$PS_PID rc=0 i
    PS_PID=""
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            problem "postseald (pid $pid) still running 20 s after SIGTERM; sent SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || rc=$?
    if [ "$rc" != 0 ]; then
        problem "postseald (pid $pid) exited with status $rc on shutdown (>128 = killed by signal $((rc - 128)))"
    fi
}

stop_postfix() {
    [ -n "$PF_ETC" ] || return 0
    local etc=$PF_ETC master=$PF_MASTER i
    PF_ETC=""; PF_MASTER=""
    postfix -c "$etc" stop >/dev/null 2>&1 || true
    if [ -n "$master" ]; then
        for i in $(seq 1 150); do kill -0 "$master" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$master" 2>/dev/null; then
            postfix -c "$etc" abort >/dev/null 2>&1 || true
            sleep 1
            kill -0 "$master" 2>/dev/null && kill -KILL "$master" 2>/dev/null || true
        fi
    fi
}

cleanup_extra() { :; }
report_extra() { :; }
cleanup() {
    set +e
    stop_postseald
    stop_postfix
    cleanup_extra
    if [ "$KEEP" = 1 ]; then log "scratch directory kept: $TMP"; else rm -rf "$TMP"; fi
}

freeport() { $LIB freeport; }

start_log_suffix() { :; }

# ------------------------------------------------------------------ postseald

postseald_yaml_extra() { :; }
PS_SPOOL=""; PS_PORT=""; PS_LOG=""
# Worker threads: half the cores, at least one. The load tool and the sink run
# on the same machine and take the other half; a worker per core would make
# the relay's threads fight them for the CPU (context switches, smaller group
# commits). On 2 cores, 1 worker: 0.13-0.15 ms CPU and 5,000-5,600 msg/s at
# 4 KiB against 0.19 ms and 3,500-4,000 msg/s with 2 (smtp-source -s 50, 20,000
# messages, 2026-11-30). Scripts may set PS_THREADS first (relay.sh --threads).
PS_THREADS=${PS_THREADS:-$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))}
start_postseald() {   # $1 = label
    local dir=$TMP/postseald-$1 mport
    mkdir -p "$dir"
    PS_PORT=$(freeport); mport=$(freeport)
    PS_SPOOL=$dir/spool; PS_LOG=$dir/postseald.log
    cat > "$dir/postseald.yaml" <<EOF
hostname: bench.test
threads: $PS_THREADS
listen: {smtp: "127.0.0.1:$PS_PORT", submission: "", metrics: "127.0.0.1:$mport"}
spool_dir: $PS_SPOOL
mynetworks: [127.0.0.0/8]
# Never the system resolver: MX lookups from a bench must not leave the
# machine. Port 9 on loopback has no listener: every lookup fails at once.
dns: {servers: ["127.0.0.1:9"], timeout_ms: 200, tries: 1}
local_transport: "maildir:$dir/mail/%d/%u"
EOF
    postseald_yaml_extra >> "$dir/postseald.yaml"
    cp "$dir/postseald.yaml" "$TMP/postseald.yaml"
    record "$POSTSEALD -c $dir/postseald.yaml 2>$PS_LOG &"
    "$POSTSEALD" -c "$dir/postseald.yaml" > "$PS_LOG" 2>&1 &
    PS_PID=$!
    if ! $LIB waitsmtp "$PS_PORT" 15; then
        problem "postseald did not come up on 127.0.0.1:$PS_PORT; log: $(tail -3 "$PS_LOG" | tr '\n' ' ')"
        stop_postseald
        return 1
    fi
    log "postseald pid $PS_PID on 127.0.0.1:$PS_PORT, spool $PS_SPOOL$(start_log_suffix)"
}

# ------------------------------------------------------------------ Postfix

postfix_after_start() { :; }
PF_PORT=""; PF_DIR=""
start_postfix() {     # $1 = label
    PF_DIR=$TMP/postfix-$1
    local etc=$PF_DIR/etc i out
    mkdir -p "$etc" "$PF_DIR/queue" "$PF_DIR/data"
    chown postfix:postfix "$PF_DIR/data"
    PF_PORT=$(freeport)
    postfix_main_cf > "$etc/main.cf"
    if [ -n "${POSTFIX_EXTRA:-}" ]; then     # experiments only, e.g. POSTFIX_EXTRA='in_flow_delay = 0'
        printf '# POSTFIX_EXTRA from the environment\n%s\n' "$POSTFIX_EXTRA" >> "$etc/main.cf"
    fi
    {
        cat <<EOF
127.0.0.1:$PF_PORT inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
EOF
        [ -z "$PF_MASTER_EXTRA" ] || printf '%s\n' "$PF_MASTER_EXTRA"
        cat <<EOF
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
    } > "$etc/master.cf"
    cp "$etc/main.cf" "$TMP/main.cf"; cp "$etc/master.cf" "$TMP/master.cf"
    record "postfix -c $etc start"
    # postfix(1) reports errors only on a terminal: give it one with script(1) if we can
    if command -v script >/dev/null; then
        out=$(script -qec "postfix -c $etc start" /dev/null 2>&1) || {
            problem "postfix start failed: $(echo "$out" | tr '\r\n' '  ')"; return 1; }
    else
        postfix -c "$etc" start || { problem "postfix start failed (see $PF_DIR/maillog)"; return 1; }
    fi
    PF_ETC=$etc
    for i in $(seq 1 50); do [ -s "$PF_DIR/queue/pid/master.pid" ] && break; sleep 0.1; done
    PF_MASTER=$(tr -dc 0-9 < "$PF_DIR/queue/pid/master.pid" 2>/dev/null || true)
    if [ -z "$PF_MASTER" ] || ! $LIB waitsmtp "$PF_PORT" 15; then
        problem "Postfix did not come up on 127.0.0.1:$PF_PORT; maillog: $(tail -3 "$PF_DIR/maillog" 2>/dev/null | tr '\n' ' ')"
        stop_postfix
        return 1
    fi
    postfix_after_start
    log "Postfix master pid $PF_MASTER on 127.0.0.1:$PF_PORT, $PF_DIR$(start_log_suffix)"
}

# ------------------------------------------------------------------ machine info

postseald_build_info() {   # sets BUILD_INFO
    BUILD_INFO="$("$POSTSEALD" --version 2>&1 | head -1)"
    if [ -f "$(dirname "$POSTSEALD")/CMakeCache.txt" ]; then
        BUILD_INFO="$BUILD_INFO, $(grep -m1 '^CMAKE_BUILD_TYPE:' "$(dirname "$POSTSEALD")/CMakeCache.txt" | sed 's/.*=/CMAKE_BUILD_TYPE=/')"
    fi
    record "# postseald: $POSTSEALD ($BUILD_INFO)"
}

bench_prelude() {   # the start-up log line; sets FSYNC_MS
    log "scratch $TMP; postseald $POSTSEALD; sizes $SIZES; N=$N; reps=$REPS; sessions=$SESSIONS"
    FSYNC_MS=$($PY - "$TMP" <<'EOF'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync.test")
fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
t = time.perf_counter()
for _ in range(200):
    os.write(fd, b"x" * 1024); os.fdatasync(fd)
print("%.3f" % ((time.perf_counter() - t) / 200 * 1000))
os.close(fd); os.unlink(p)
EOF
)
}

# ------------------------------------------------------------------ report

# write_meta: $TMP/meta.json.  Standard input: the script's own entries of the
# `meta` dict literal ("key": value, lines; after the common keys, before the
# record files); `sh`, `t`, `pfv` (Postfix version), `json`, `os`, `platform`
# and `subprocess` are there to use.
write_meta() {
    {
        cat <<EOF
import json, os, platform, subprocess
t = "$TMP"
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return ""
cpu = ""
for l in open("/proc/cpuinfo"):
    if l.startswith("model name"):
        cpu = l.split(":", 1)[1].strip(); break
pfv = sh("postconf -d mail_version 2>/dev/null | sed 's/.*= //'")
meta = {
    "date": sh("date -u '+%Y-%m-%d %H:%M:%SZ'"),
    "smoke": $SMOKE == 1,
    "nproc": sh("nproc"),
    "cpu_model": cpu,
    "kernel": platform.release(),
    "debian": sh("cat /etc/debian_version"),
    "memory": sh("free -h | awk '/^Mem:/{print \$2}'") + " RAM",
    "filesystem": sh("df -T '$TMP' | awk 'NR==2{print \$1\" \"\$2}'"),
    "fdatasync_ms": "$FSYNC_MS",
    "postseald_rev": sh("git -C '$REPO' rev-parse --short HEAD"),
EOF
        cat
        cat <<'EOF'
}
for k in ("commands", "problems", "notes", "warnings"):
    meta[k] = open(os.path.join(t, k + ".txt")).read().splitlines()
# probe results (only ingress.sh writes these)
for k, f in [("latency", "latency.json"), ("idle", "idle.json")]:
    p = os.path.join(t, f)
    if os.path.exists(p):
        meta[k] = json.load(open(p))
for k, f in [("postseald_config", "postseald.yaml"), ("postfix_main_cf", "main.cf"), ("postfix_master_cf", "master.cf")]:
    p = os.path.join(t, f)
    if os.path.exists(p):
        meta[k] = open(p).read()
json.dump(meta, open(os.path.join(t, "meta.json"), "w"))
EOF
    } | $PY - "$TMP"
}

# write_chart: the PNG beside the results file (OUT with .png for .md), drawn by gnuplot
# from runs + meta (bench/chart.gp). Sets CHART (its path, or empty) and CHART_NOTE
# (why there is none). No gnuplot, or gnuplot failing, costs the chart, not the run.
CHART=""; CHART_NOTE=""
write_chart() {
    local png gp=${GNUPLOT:-gnuplot}
    case "$OUT" in *.md) png=${OUT%.md}.png ;; *) png=$OUT.png ;; esac
    rm -f "$png"
    if ! command -v "$gp" >/dev/null; then
        CHART_NOTE="none, $gp not found (apt-get install gnuplot-nox)"
        log "chart skipped: $gp not found"
        return 0
    fi
    if $LIB chart --kind "$BENCH_NAME" --runs "$TMP/runs.jsonl" --meta "$TMP/meta.json" \
            --png "$png" --gnuplot "$gp" 2> "$TMP/chart.err"; then
        CHART=$png
        log "chart: $png"
    else
        CHART_NOTE="none, drawing it failed: $(tail -1 "$TMP/chart.err")"
        log "chart skipped: $(tail -1 "$TMP/chart.err")"
    fi
}

# finish REPORT_CMD: the chart and the results file from runs + meta, the summary on
# stdout; exit 1 on problems
finish() {
    mkdir -p "$(dirname "$OUT")"
    write_chart
    $LIB "$1" --runs "$TMP/runs.jsonl" --meta "$TMP/meta.json" --md "$OUT" \
        --chart "$CHART" --chart-note "$CHART_NOTE"
    report_extra
    log "results: $OUT"
    if [ -s "$TMP/problems.txt" ]; then
        log "$(wc -l < "$TMP/problems.txt") PROBLEM(S):"; sed 's/^/    /' "$TMP/problems.txt" >&2
        exit 1
    fi
}
