#!/usr/bin/env bash
# SMTP ingress benchmark: postseald vs a private Postfix instance under the same
# smtp-source load.  Loopback only (127.0.0.1), every run bounded in count and time.
#
#   bench/ingress.sh            full run, writes bench/results/ingress-YYYY-MM-DD.md
#                               and a chart of it, ingress-YYYY-MM-DD.png
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
#   GNUPLOT        draws the chart (default: gnuplot; none found = no chart, a note)
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
#                        in --smoke mode the default is a file in the scratch dir, removed);
#                        the chart goes beside it, FILE with .png for .md
#   --keep               keep the scratch directory
set -euo pipefail

BENCH_NAME=ingress
. "$(dirname "$0")/common.sh"

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
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

if [ "$SMOKE" = 1 ]; then
    SIZES=1024; N=2000; REPS=1; DO_POSTFIX=0
    IDLE_SESSIONS=500; LAT_DURATION=2; LAT_SESSIONS=10; RUN_TIMEOUT=60
fi
check_numbers "$N" "$REPS" "$SESSIONS" "$IDLE_SESSIONS"
[ "$N" -le 1000000 ] || die "-n at most 1000000"

resolve_postseald
check_postseald_bin
require_smtp_tool smtp-source
if [ "$DO_POSTFIX" = 1 ]; then require_postfix_instance; fi

# the idle probe needs ~IDLE_SESSIONS fds in the client and in the daemon (child of this shell)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE_SESSIONS + 512)) ]; then
    die "ulimit -n is $(ulimit -n), too low for $IDLE_SESSIONS idle sessions"
fi

setup_scratch postseal-bench

postseald_count() {
    local out
    out=$("$POSTSEAL_CLI" queue list --json -d "$PS_SPOOL" 2>"$TMP/qlist.err") || {
        problem "postseal queue list failed: $(head -3 "$TMP/qlist.err" | tr '\n' ' ')"; echo -1; return; }
    [ -n "$out" ] && printf '%s\n' "$out" | wc -l || echo 0
}

# ------------------------------------------------------------------ Postfix

postfix_main_cf() {
    cat <<EOF
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

postseald_build_info
bench_prelude

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
note "postseald: threads: $PS_THREADS (of $(nproc) cores), logging to a file (one line per connect/disconnect), durable 250 after group-committed fdatasync; no delivery exists yet."
note "Postfix: private instance (own config_directory and queue_directory), no chroot, default durability (cleanup fsyncs each queue file before smtpd answers 250), default_process_limit = 100, every message put on HOLD by smtpd_client_restrictions = check_client_access static:HOLD so qmgr does no delivery work; hold queue count checked after each run. Logging to a file via postlogd (maillog_file). in_flow_delay left at its default (1s)."
note "Postfix CPU = master + every live descendant (smtpd, cleanup, trivial-rewrite, qmgr, anvil, postlogd, ...) + master's cutime/cstime for reaped children, before vs after (1 s after the run so exiting processes are reaped). smtpd processes are recycled every 100 sessions (max_use), so process creation is part of Postfix's cost."
note "CPU is /proc utime+stime in clock ticks (1/$(getconf CLK_TCK) s). Kernel work not charged to a process (block-layer/journal threads, some softirq) is not counted for either server."
note "Before every run the script waits (up to 300 s) until the whole machine is below 10% busy over 1 s, so that other work on a shared machine (builds, fuzzers) does not skew a run; CPU used by other processes during a run is shown per run and flagged under Warnings."
note "fdatasync on this disk is fast (see 'fdatasync mean' above: a virtual disk with a volatile write cache). On a disk with slow flushes, the per-message fsync of Postfix and the group commit of postseald would diverge much further."

write_meta <<EOF
    "postseald_tree": (lambda st: ("not clean, the binary may include uncommitted or untracked sources: " + ", ".join(l[3:] for l in st[:12]) + (" ..." if len(st) > 12 else "")) if st else "clean")(
        [l for l in sh("git -C '$REPO' status --porcelain -- . ':(exclude)bench'").splitlines() if l.strip()]),
    "postseald_binary": "$POSTSEALD ($BUILD_INFO)",
    "postfix_version": pfv if $DO_POSTFIX == 1 else "not run",
    "smtp_source": "smtp-source (Postfix " + pfv + ")",
    "python": platform.python_version(),
    "sessions": $SESSIONS,
    "reuse": $( [ "$REUSE" = 1 ] && echo True || echo False ),
    "reps": $REPS,
    "latency_basis": "$LAT_BASIS",
EOF
finish report
