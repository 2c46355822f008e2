#!/usr/bin/env bash
# SMTP ingress benchmark: postseald vs a private Postfix instance under the same
# smtp-source load.  Loopback only (127.0.0.1), every run bounded in count and time.
#
#   bench/ingress.sh            full run, writes bench/results/ingress-YYYY-MM-DD.md
#   bench/ingress.sh --smoke    a few seconds, postseald only, for CI
#
# Prints a JSON summary on stdout; progress goes to stderr.  Exit status 0 only if
# every smtp-source run succeeded, every queue count matched and no server died.
#
# Environment:
#   POSTSEALD      daemon binary (default: build/postseald in the repository)
#   POSTSEAL_CLI   command-line tool (default: postseal next to POSTSEALD)
#   BENCH_TMP      parent of the scratch directory (default: /tmp)
#   POSTFIX_EXTRA  lines appended to the Postfix main.cf (experiments; shown in the results)
#
# Options:
#   --smoke              1 KiB, N=2000, one repetition, postseald only, short latency/idle probes
#   --sizes "A B C"      message sizes in bytes (default "1024 4096 65536")
#   -n N                 messages per run, every size (default 20000)
#   --reps R             repetitions per cell (default 3)
#   --sessions S         smtp-source -s (default 50)
#   --reuse              smtp-source -d: many messages per connection
#   --no-postfix         skip Postfix
#   --no-latency         skip the latency probe
#   --no-idle            skip the idle-memory probe
#   --idle-sessions K    idle connections to open (default 5000)
#   --out FILE           results file (default bench/results/ingress-YYYY-MM-DD.md;
#                        in --smoke mode the default is a file in the scratch dir, removed)
#   --keep               keep the scratch directory
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_DIR/.." && pwd)
LIB="/usr/bin/python3 $BENCH_DIR/benchlib.py"
PY=/usr/bin/python3

POSTSEALD=${POSTSEALD:-$REPO/build/postseald}
SIZES="1024 4096 65536"
N=20000
REPS=3
SESSIONS=50
DO_POSTFIX=1
DO_LATENCY=1
DO_IDLE=1
IDLE_SESSIONS=5000
LAT_DURATION=10
LAT_SESSIONS=50
SMOKE=0
REUSE=0
OUT=""
KEEP=0
RUN_TIMEOUT=600        # hard limit for one smtp-source run, seconds

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --sizes) SIZES=$2; shift ;;
        -n) N=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --reuse) REUSE=1 ;;
        --no-postfix) DO_POSTFIX=0 ;;
        --no-latency) DO_LATENCY=0 ;;
        --no-idle) DO_IDLE=0 ;;
        --idle-sessions) IDLE_SESSIONS=$2; shift ;;
        --out) OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "ingress.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

if [ "$SMOKE" = 1 ]; then
    SIZES=1024; N=2000; REPS=1; DO_POSTFIX=0
    IDLE_SESSIONS=500; LAT_DURATION=2; LAT_SESSIONS=10; RUN_TIMEOUT=60
fi
for v in "$N" "$REPS" "$SESSIONS" "$IDLE_SESSIONS"; do
    [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 1 ] || { echo "ingress.sh: bad number '$v'" >&2; exit 2; }
done
[ "$N" -le 1000000 ] || { echo "ingress.sh: -n at most 1000000" >&2; exit 2; }

case "$POSTSEALD" in /*) ;; *) POSTSEALD=$PWD/$POSTSEALD ;; esac
POSTSEAL_CLI=${POSTSEAL_CLI:-$(dirname "$POSTSEALD")/postseal}
[ -x "$POSTSEALD" ] || { echo "ingress.sh: no postseald at $POSTSEALD (build it, or set POSTSEALD)" >&2; exit 2; }
[ -x "$POSTSEAL_CLI" ] || { echo "ingress.sh: no postseal CLI at $POSTSEAL_CLI (set POSTSEAL_CLI)" >&2; exit 2; }
command -v smtp-source >/dev/null || { echo "ingress.sh: smtp-source not found (apt-get install postfix)" >&2; exit 2; }
if [ "$DO_POSTFIX" = 1 ]; then
    command -v postfix >/dev/null || { echo "ingress.sh: postfix not found" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "ingress.sh: a private Postfix instance needs root (or use --no-postfix)" >&2; exit 2; }
    id postfix >/dev/null 2>&1 || { echo "ingress.sh: no 'postfix' user" >&2; exit 2; }
fi

# the idle probe needs ~IDLE_SESSIONS fds in the client and in the daemon (child of this shell)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_SESSIONS + 512)) ]; then
    echo "ingress.sh: ulimit -n is $(ulimit -n), too low for $IDLE_SESSIONS idle sessions" >&2; exit 2
fi

# Waiting for an idle machine makes measurements fair on a shared box; a
# smoke run (CI, tests running beside it) only checks that the harness works.
IDLE_TIMEOUT=300
[ "$SMOKE" = 1 ] && IDLE_TIMEOUT=0

DATE=$(date -u +%Y-%m-%d)
[ -n "$OUT" ] || { [ "$SMOKE" = 1 ] || OUT=$BENCH_DIR/results/ingress-$DATE.md; }

TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/postseal-bench.XXXXXX")
chmod 755 "$TMP"                       # Postfix daemons (user postfix) must traverse it
[ -n "$OUT" ] || OUT=$TMP/ingress-smoke-$DATE.md
: > "$TMP/runs.jsonl"; : > "$TMP/commands.txt"; : > "$TMP/problems.txt"; : > "$TMP/notes.txt"; : > "$TMP/warnings.txt"

PS_PID=""; PF_ETC=""; PF_MASTER=""
log() { echo "[ingress $(date +%T)] $*" >&2; }
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

cleanup() {
    set +e
    stop_postseald
    stop_postfix
    if [ "$KEEP" = 1 ]; then log "scratch directory kept: $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

freeport() { $LIB freeport; }

# ------------------------------------------------------------------ postseald

PS_SPOOL=""; PS_PORT=""; PS_LOG=""
start_postseald() {   # $1 = label
    local dir=$TMP/postseald-$1 mport
    mkdir -p "$dir"
    PS_PORT=$(freeport); mport=$(freeport)
    PS_SPOOL=$dir/spool; PS_LOG=$dir/postseald.log
    cat > "$dir/postseald.yaml" <<EOF
hostname: bench.test
threads: 2
listen: {smtp: "127.0.0.1:$PS_PORT", submission: "", metrics: "127.0.0.1:$mport"}
spool_dir: $PS_SPOOL
mynetworks: [127.0.0.0/8]
EOF
    cp "$dir/postseald.yaml" "$TMP/postseald.yaml"
    record "$POSTSEALD -c $dir/postseald.yaml 2>$PS_LOG &"
    "$POSTSEALD" -c "$dir/postseald.yaml" > "$PS_LOG" 2>&1 &
    PS_PID=$!
    if ! $LIB waitsmtp "$PS_PORT" 15; then
        problem "postseald did not come up on 127.0.0.1:$PS_PORT; log: $(tail -3 "$PS_LOG" | tr '\n' ' ')"
        stop_postseald
        return 1
    fi
    log "postseald pid $PS_PID on 127.0.0.1:$PS_PORT, spool $PS_SPOOL"
}

postseald_count() {
    local out
    out=$("$POSTSEAL_CLI" queue list --json -d "$PS_SPOOL" 2>"$TMP/qlist.err") || {
        problem "postseal queue list failed: $(head -3 "$TMP/qlist.err" | tr '\n' ' ')"; echo -1; return; }
    [ -n "$out" ] && printf '%s\n' "$out" | wc -l || echo 0
}

# ------------------------------------------------------------------ Postfix

PF_PORT=""; PF_DIR=""
start_postfix() {     # $1 = label
    PF_DIR=$TMP/postfix-$1
    local etc=$PF_DIR/etc i out
    mkdir -p "$etc" "$PF_DIR/queue" "$PF_DIR/data"
    chown postfix:postfix "$PF_DIR/data"
    PF_PORT=$(freeport)
    cat > "$etc/main.cf" <<EOF
# private benchmark instance: loopback only, every message put on HOLD, no delivery
compatibility_level = 3.6
queue_directory = $PF_DIR/queue
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = \$myhostname
mydestination =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
# every accepted message goes to the hold queue: the queue manager never sees it
smtpd_client_restrictions = check_client_access static:HOLD
default_process_limit = 100
# belt and braces: should anything leave hold, it is deferred, and a relay would be loopback:9
defer_transports = smtp relay local virtual lmtp error retry
relayhost = [127.0.0.1]:9
maillog_file = $PF_DIR/maillog
maillog_file_prefixes = $PF_DIR
biff = no
EOF
    if [ -n "${POSTFIX_EXTRA:-}" ]; then     # experiments only, e.g. POSTFIX_EXTRA='in_flow_delay = 0'
        printf '# POSTFIX_EXTRA from the environment\n%s\n' "$POSTFIX_EXTRA" >> "$etc/main.cf"
    fi
    cat > "$etc/master.cf" <<EOF
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
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
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
    log "Postfix master pid $PF_MASTER on 127.0.0.1:$PF_PORT, $PF_DIR"
}

postfix_count() {   # messages in the hold queue
    find "$PF_DIR/queue/hold" -type f | wc -l
}

postfix_not_held() {   # messages anywhere else in the queue
    local d n=0
    for d in incoming active deferred maildrop; do
        [ -d "$PF_DIR/queue/$d" ] && n=$((n + $(find "$PF_DIR/queue/$d" -type f | wc -l)))
    done
    echo "$n"
}

# ------------------------------------------------------------------ one load run

# run_load SERVER SIZE REP N  (REP=0: warm-up, not recorded)
run_load() {
    local server=$1 size=$2 rep=$3 n=$4 port pid mode before after res rc log
    if [ "$server" = postseald ]; then port=$PS_PORT; pid=$PS_PID; mode=proc
    else port=$PF_PORT; pid=$PF_MASTER; mode=tree; fi
    log=$TMP/smtp-source-$server-$size-$rep.log; : > "$log"
    local cmd=(smtp-source -s "$SESSIONS" -m "$n" -l "$size" -f a@bench.test -t b@bench.example "127.0.0.1:$port")
    [ "$REUSE" = 1 ] && cmd=(smtp-source -d "${cmd[@]:1}")
    record "timeout -k 5 $RUN_TIMEOUT ${cmd[*]}    # $server size=$size rep=$rep"
    if [ "$server" = postseald ]; then before=$(postseald_count); else before=$(postfix_count); fi
    res=$($LIB run --mode "$mode" --pid "$pid" --log "$log" --idle-timeout "$IDLE_TIMEOUT" -- timeout -k 5 "$RUN_TIMEOUT" "${cmd[@]}") || {
        problem "$server size=$size rep=$rep: the measuring helper failed (server gone?)"; res='{"rc":-1,"wall_s":1,"client_cpu_s":0,"server_cpu_s":0,"server_alive":false}'; }
    if [ "$server" = postseald ]; then after=$(postseald_count); else after=$(postfix_count); fi
    local probs=()
    rc=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["rc"])' "$res")
    [ "$rc" = 0 ] || probs+=("smtp-source exited $rc$([ "$rc" = 124 ] && echo " (timed out after ${RUN_TIMEOUT}s)"): $(grep -v '^$' "$log" | head -3 | tr '\n' ' ')")
    if [ "$rc" = 0 ] && grep -qiE 'fatal|error|warning' "$log"; then
        probs+=("smtp-source complained: $(grep -iE 'fatal|error|warning' "$log" | head -3 | tr '\n' ' ')")
    fi
    local delta=$((after - before))
    local where="postseald spool"; [ "$server" = postfix ] && where="Postfix hold queue"
    [ "$delta" = "$n" ] || probs+=("queue count mismatch: $delta new messages in the $where (before $before, after $after), expected $n")
    if [ "$server" = postseald ]; then
        kill -0 "$PS_PID" 2>/dev/null || probs+=("postseald DIED during the run; last log lines: $(tail -5 "$PS_LOG" | tr '\n' ' ')")
    else
        kill -0 "$PF_MASTER" 2>/dev/null || probs+=("Postfix master DIED during the run")
        local nh; nh=$(postfix_not_held)
        [ "$nh" = 0 ] || probs+=("$nh messages are NOT on hold (incoming/active/deferred/maildrop)")
    fi
    local w
    w=$($PY - "$res" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
out = []
if not r.get("idle_before_ok", True):
    out.append("machine still %.0f%% busy after waiting %.0f s for it to go idle before the run (%s)" % (
        r["idle_busy_pct"], r["idle_wait_s"], ", ".join("%s[%d] %.1fs" % (h["comm"], h["pid"], h["cpu_s"]) for h in r["idle_hogs"]) or "kernel?"))
if r.get("foreign_cpu_s", 0) > 0.05 * r["wall_s"] + 0.1:
    out.append("other processes used %.2f CPU s during the %.2f s run: %s" % (
        r["foreign_cpu_s"], r["wall_s"], ", ".join("%s[%d] %.2fs" % (f["comm"], f["pid"], f["cpu_s"]) for f in r["foreign_procs"])))
print("\n".join(out))
EOF
)
    if [ -n "$w" ]; then
        while read -r l; do warn "$server size=$size $( [ "$rep" = 0 ] && echo warm-up || echo "rep=$rep"): $l"; done <<< "$w"
    fi
    local p
    for p in "${probs[@]}"; do problem "$server size=$size $( [ "$rep" = 0 ] && echo warm-up || echo "rep=$rep"): $p"; done
    local wall; wall=$($PY -c 'import json,sys; print("%.2f" % json.loads(sys.argv[1])["wall_s"])' "$res")
    log "$server size=$size $( [ "$rep" = 0 ] && echo warm-up || echo "rep $rep/$REPS"): $n msgs in ${wall}s = $($PY -c "print(round($n/$wall))") msg/s, queued +$delta"
    [ "$rep" = 0 ] && return 0
    $PY - "$res" "$server" "$size" "$rep" "$n" "$SESSIONS" "$delta" "${#probs[@]}" >> "$TMP/runs.jsonl" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
r.update(server=sys.argv[2], size=int(sys.argv[3]), rep=int(sys.argv[4]), n=int(sys.argv[5]),
         sessions=int(sys.argv[6]), count_delta=int(sys.argv[7]), problems_n=int(sys.argv[8]))
print(json.dumps(r))
EOF
}

bench_server() {   # SERVER SIZE
    local server=$1 size=$2 rep warm
    warm=$((N / 10)); [ "$warm" -gt 1000 ] && warm=1000; [ "$warm" -lt 50 ] && warm=50
    if [ "$server" = postseald ]; then start_postseald "$size" || return 0
    else start_postfix "$size" || return 0; fi
    run_load "$server" "$size" 0 "$warm"
    for rep in $(seq 1 "$REPS"); do
        run_load "$server" "$size" "$rep" "$N"
    done
    if [ "$server" = postseald ]; then
        grep -E 'level=(error|warn|crit|fatal)' "$PS_LOG" | head -5 | while read -r l; do problem "postseald log: $l"; done || true
        stop_postseald
        rm -rf "$TMP/postseald-$size/spool"
    else
        grep -E 'warning|fatal|panic|error' "$PF_DIR/maillog" | grep -v 'NIS domain name' | head -5 | while read -r l; do problem "Postfix log: $l"; done || true
        stop_postfix
        rm -rf "$PF_DIR/queue"
    fi
}

# ------------------------------------------------------------------ machine info

BUILD_INFO="$("$POSTSEALD" --version 2>&1 | head -1)"
if [ -f "$(dirname "$POSTSEALD")/CMakeCache.txt" ]; then
    BUILD_INFO="$BUILD_INFO, $(grep -m1 '^CMAKE_BUILD_TYPE:' "$(dirname "$POSTSEALD")/CMakeCache.txt" | sed 's/.*=/CMAKE_BUILD_TYPE=/')"
fi
record "# postseald: $POSTSEALD ($BUILD_INFO)"
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

# ------------------------------------------------------------------ the runs

for size in $SIZES; do
    bench_server postseald "$size"
    if [ "$DO_POSTFIX" = 1 ]; then bench_server postfix "$size"; fi
done

# latency at about half of postseald's measured maximum (smallest size)
LAT_BASIS=""
if true; then
    if [ "$DO_LATENCY" = 1 ] && start_postseald latency; then
        if true; then
            first=${SIZES%% *}
            rate=$($PY - "$TMP/runs.jsonl" "$first" <<'EOF'
import json, statistics, sys
v = [r["n"] / r["wall_s"] for r in map(json.loads, open(sys.argv[1])) if r["server"] == "postseald" and r["size"] == int(sys.argv[2]) and r["rc"] == 0]
print(round(statistics.median(v) / 2) if v else 200)
EOF
)
            [ "$SMOKE" = 1 ] && rate=500
            LAT_BASIS="half of the median smtp-source rate at $first B"
            [ "$SMOKE" = 1 ] && LAT_BASIS="fixed smoke rate"
            record "$PY $BENCH_DIR/latency.py --port $PS_PORT --sessions $LAT_SESSIONS --rate $rate --duration $LAT_DURATION --size $first"
            $LIB waitidle --timeout "$IDLE_TIMEOUT" > "$TMP/waitidle.json" || warn "latency probe: machine not idle before the probe: $(cat "$TMP/waitidle.json")"
            log "latency probe: $rate msg/s, $LAT_SESSIONS sessions, ${LAT_DURATION}s"
            if ! timeout -k 5 $((LAT_DURATION + 60)) $PY "$BENCH_DIR/latency.py" --port "$PS_PORT" --sessions "$LAT_SESSIONS" \
                    --rate "$rate" --duration "$LAT_DURATION" --size "$first" > "$TMP/latency.json"; then
                problem "latency probe reported errors: $(head -c 600 "$TMP/latency.json")"
            fi
            [ -s "$TMP/latency.json" ] || rm -f "$TMP/latency.json"
            kill -0 "$PS_PID" 2>/dev/null || problem "postseald DIED during the latency probe: $(tail -5 "$PS_LOG" | tr '\n' ' ')"
        fi
        stop_postseald
    fi
    # idle memory on a fresh daemon that has served no traffic
    if [ "$DO_IDLE" = 1 ] && start_postseald idle; then
        if kill -0 "$PS_PID" 2>/dev/null; then
            record "ulimit -n $(ulimit -n); $PY $BENCH_DIR/benchlib.py idle --pid $PS_PID --port $PS_PORT --count $IDLE_SESSIONS"
            log "idle-memory probe: $IDLE_SESSIONS sessions"
            if ! timeout -k 5 180 $LIB idle --pid "$PS_PID" --port "$PS_PORT" --count "$IDLE_SESSIONS" > "$TMP/idle.json"; then
                problem "idle probe did not open every session: $(head -c 600 "$TMP/idle.json")"
            fi
            [ -s "$TMP/idle.json" ] || rm -f "$TMP/idle.json"
            kill -0 "$PS_PID" 2>/dev/null || problem "postseald DIED during the idle probe: $(tail -5 "$PS_LOG" | tr '\n' ' ')"
        fi
        stop_postseald
    fi
fi

# ------------------------------------------------------------------ report

note "Both servers ran on the same 2-core machine as the load tool; smtp-source (and the Python probes) compete with the server for CPU, so msg/s is a whole-system figure. smtp-source's own CPU is reported separately."
note "Each cell: a fresh server with an empty spool/queue, one unrecorded warm-up run (N/10, at most 1000 messages), then the repetitions back to back (the spool/hold queue grows across repetitions)."
note "postseald: threads: 2, logging to a file (one line per connect/disconnect), durable 250 after group-committed fdatasync; no delivery exists yet."
note "Postfix: private instance (own config_directory and queue_directory), no chroot, default durability (cleanup fsyncs each queue file before smtpd answers 250), default_process_limit = 100, every message put on HOLD by smtpd_client_restrictions = check_client_access static:HOLD so qmgr does no delivery work; hold queue count checked after each run. Logging to a file via postlogd (maillog_file). in_flow_delay left at its default (1s)."
note "Postfix CPU = master + every live descendant (smtpd, cleanup, trivial-rewrite, qmgr, anvil, postlogd, ...) + master's cutime/cstime for reaped children, before vs after (1 s after the run so exiting processes are reaped). smtpd processes are recycled every 100 sessions (max_use), so process creation is part of Postfix's cost."
note "CPU is /proc utime+stime in clock ticks (1/$(getconf CLK_TCK) s). Kernel work not charged to a process (block-layer/journal threads, some softirq) is not counted for either server."
note "Before every run the script waits (up to 300 s) until the whole machine is below 10% busy over 1 s, so that other work on a shared machine (builds, fuzzers) does not skew a run; CPU used by other processes during a run is shown per run and flagged under Warnings."
note "fdatasync on this disk is fast (see 'fdatasync mean' above: a virtual disk with a volatile write cache). On a disk with slow flushes, the per-message fsync of Postfix and the group commit of postseald would diverge much further."

$PY - "$TMP" <<EOF
import json, os, platform, subprocess
t = "$TMP"
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception: return ""
cpu = ""
for l in open("/proc/cpuinfo"):
    if l.startswith("model name"):
        cpu = l.split(":", 1)[1].strip(); break
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
    "postseald_tree": (lambda st: ("not clean, the binary may include uncommitted or untracked sources: " + ", ".join(l[3:] for l in st[:12]) + (" ..." if len(st) > 12 else "")) if st else "clean")(
        [l for l in sh("git -C '$REPO' status --porcelain -- . ':(exclude)bench'").splitlines() if l.strip()]),
    "postseald_binary": "$POSTSEALD ($BUILD_INFO)",
    "postfix_version": sh("postconf -d mail_version 2>/dev/null | sed 's/.*= //'") if $DO_POSTFIX == 1 else "not run",
    "smtp_source": "smtp-source (Postfix " + sh("postconf -d mail_version 2>/dev/null | sed 's/.*= //'") + ")",
    "python": platform.python_version(),
    "sessions": $SESSIONS,
    "reuse": $( [ "$REUSE" = 1 ] && echo True || echo False ),
    "reps": $REPS,
    "latency_basis": "$LAT_BASIS",
    "commands": open(os.path.join(t, "commands.txt")).read().splitlines(),
    "problems": open(os.path.join(t, "problems.txt")).read().splitlines(),
    "notes": open(os.path.join(t, "notes.txt")).read().splitlines(),
    "warnings": open(os.path.join(t, "warnings.txt")).read().splitlines(),
}
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
mkdir -p "$(dirname "$OUT")"
$LIB report --runs "$TMP/runs.jsonl" --meta "$TMP/meta.json" --md "$OUT"
log "results: $OUT"
if [ -s "$TMP/problems.txt" ]; then
    log "$(wc -l < "$TMP/problems.txt") PROBLEM(S):"; sed 's/^/    /' "$TMP/problems.txt" >&2
    exit 1
fi
