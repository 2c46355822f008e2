#!/usr/bin/env bash
# End-to-end SMTP relay benchmark: smtp-source -> relay -> Postfix smtp-sink, for
# postseald and a private Postfix instance relaying to the same sink, plus the direct
# smtp-source -> smtp-sink rate (no relay: the ceiling).  Loopback only (127.0.0.1),
# every run bounded in count and time.
#
#   bench/relay.sh            full run, writes bench/results/relay-YYYY-MM-DD.md
#   bench/relay.sh --smoke    a few seconds, postseald only, for CI
#
# A run is timed from the start of smtp-source until the sink's counter
# (smtp-sink -c) has gone up by N; then the relay's queue must drain.  Every run
# checks that the sink got exactly N (more = duplicates, reported) and that the
# relay's queue is empty afterwards.
#
# Prints a JSON summary on stdout; progress goes to stderr.  Exit status 0 only if
# every smtp-source run succeeded, every count matched, every queue drained and no
# server died.
#
# Environment:
#   POSTSEALD      daemon binary (default: build/postseald in the repository)
#   POSTSEAL_CLI   command-line tool (default: postseal next to POSTSEALD)
#   BENCH_TMP      parent of the scratch directory (default: /tmp)
#   POSTFIX_EXTRA  lines appended to the Postfix main.cf (experiments; shown in the results)
#   POSTSEALD_EXTRA  lines appended to the postseald YAML (experiments; shown in the results)
#
# Options:
#   --smoke              1 KiB, N=2000, one repetition, postseald only, no idle wait
#   --sizes "A B C"      message sizes in bytes (default "1024 4096 65536")
#   -n N                 messages per run, every size (default 20000)
#   --reps R             repetitions per cell (default 3)
#   --sessions S         smtp-source -s (default 50)
#   --no-direct          skip the direct smtp-source -> smtp-sink runs
#   --no-postfix         skip Postfix
#   --no-postseald       skip postseald
#   --run-timeout S      hard limit for one run, seconds (default 600; smoke 60)
#   --out FILE           results file (default bench/results/relay-YYYY-MM-DD.md;
#                        in --smoke mode the default is a file in the scratch dir, removed)
#   --keep               keep the scratch directory
set -euo pipefail

BENCH_NAME=relay
. "$(dirname "$0")/common.sh"

SIZES="1024 4096 65536"
N=20000
REPS=3
SESSIONS=50
DO_DIRECT=1
DO_POSTFIX=1
DO_POSTSEALD=1
SMOKE=0
OUT=""
KEEP=0
RUN_TIMEOUT=600        # hard limit for one run (smtp-source start .. sink has N), seconds
STALL=120              # give up on a run after this long without a delivery (> retry_initial 60 s + 20% jitter)
DRAIN_TIMEOUT=60       # after the sink has N: time for the relay's queue to list empty
PF_PROCESS_LIMIT=200
TARGET_PCT=60          # the delivery issue's targets for postseald
TARGET_CPU_MS=0.2

while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --sizes) SIZES=$2; shift ;;
        -n) N=$2; shift ;;
        --reps) REPS=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --no-direct) DO_DIRECT=0 ;;
        --no-postfix) DO_POSTFIX=0 ;;
        --no-postseald) DO_POSTSEALD=0 ;;
        --run-timeout) RUN_TIMEOUT=$2; shift ;;
        --out) OUT=$2; shift ;;
        --keep) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
    shift
done

if [ "$SMOKE" = 1 ]; then
    SIZES=1024; N=2000; REPS=1; DO_POSTFIX=0; DO_DIRECT=0; DO_POSTSEALD=1
    RUN_TIMEOUT=60; STALL=30; DRAIN_TIMEOUT=30
fi
check_numbers "$N" "$REPS" "$SESSIONS" "$RUN_TIMEOUT"
for v in $SIZES; do
    [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 1 ] || die "bad size '$v'"
done
[ "$N" -le 1000000 ] || die "-n at most 1000000"
[ "$RUN_TIMEOUT" -le 3600 ] || die "--run-timeout at most 3600"

resolve_postseald
if [ "$DO_POSTSEALD" = 1 ]; then check_postseald_bin; fi
require_smtp_tool smtp-source
require_smtp_tool smtp-sink
if [ "$DO_POSTFIX" = 1 ]; then require_postfix_instance; fi
# smtp-sink refuses to run as root without -u
SINK_USER=()
if [ "$(id -u)" = 0 ]; then
    if id postfix >/dev/null 2>&1; then SINK_USER=(-u postfix); else SINK_USER=(-u nobody); fi
fi

setup_scratch postseal-relaybench

SINK_PID=""
stop_sink() {
    [ -n "$SINK_PID" ] || return 0
    local pid=$SINK_PID i
    SINK_PID=""
    kill -TERM "$pid" 2>/dev/null || true        # timeout(1) passes it on to smtp-sink
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup_extra() { stop_sink; }

# the postseald and Postfix "up" log lines name the cell's sink
start_log_suffix() { printf ', relayhost [127.0.0.1]:%s' "$SINK_PORT"; }

# ------------------------------------------------------------------ the sink

SINK_PORT=""; SINK_OUT=""
start_sink() {     # $1 = label
    local dir=$TMP/sink-$1 life
    mkdir -p "$dir"
    SINK_PORT=$(freeport); SINK_OUT=$dir/counters
    # bounded: the whole cell (warm-up + reps, each at most idle wait + run + drain) and then some
    life=$(( (REPS + 1) * (IDLE_TIMEOUT + RUN_TIMEOUT + DRAIN_TIMEOUT + 30) + 300 ))
    record "timeout -k 5 $life smtp-sink ${SINK_USER[*]} -c 127.0.0.1:$SINK_PORT 1024 > $SINK_OUT &    # $1"
    timeout -k 5 "$life" smtp-sink "${SINK_USER[@]}" -c "127.0.0.1:$SINK_PORT" 1024 > "$SINK_OUT" 2> "$dir/stderr" &
    SINK_PID=$!
    if ! $LIB waitsmtp "$SINK_PORT" 15; then
        problem "smtp-sink did not come up on 127.0.0.1:$SINK_PORT: $(head -3 "$dir/stderr" | tr '\n' ' ')"
        stop_sink
        return 1
    fi
    # waitsmtp's probe session is counted as sess=1; messages start at mesg=0
}

# ------------------------------------------------------------------ postseald

postseald_yaml_extra() {
    cat <<EOF
# the one next hop: this cell's smtp-sink
relayhost: "[127.0.0.1]:$SINK_PORT"
EOF
    if [ -n "${POSTSEALD_EXTRA:-}" ]; then
        printf '# POSTSEALD_EXTRA from the environment\n%s\n' "$POSTSEALD_EXTRA"
    fi
}

# ------------------------------------------------------------------ Postfix

postfix_main_cf() {
    cat <<EOF
# private benchmark instance: loopback only; relays everything to ONE next hop, the
# benchmark's smtp-sink, and never sends mail of its own (no bounces, no notices)
compatibility_level = 3.6
queue_directory = $PF_DIR/queue
data_directory = $PF_DIR/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = \$myhostname
# nothing is local; no relay domains; trusted clients only
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
default_process_limit = $PF_PROCESS_LIMIT
# the one and only next hop
relayhost = [127.0.0.1]:$SINK_PORT
default_transport = smtp
relay_transport = smtp
local_transport = error:5.1.1 local delivery disabled in this benchmark
virtual_transport = error:5.1.1 virtual delivery disabled in this benchmark
transport_maps =
sender_dependent_relayhost_maps =
sender_dependent_default_transport_maps =
smtp_fallback_relay =
smtp_bind_address = 127.0.0.1
# never return or generate mail: a failure stays queued (and shows up as "queue not empty")
soft_bounce = yes
notify_classes =
delay_warning_time = 0h
maillog_file = $PF_DIR/maillog
maillog_file_prefixes = $PF_DIR
biff = no
EOF
}

# master.cf: the smtp client, for the relay
PF_MASTER_EXTRA="smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp"

postfix_after_start() {
    local i
    # the directories the queue-empty check lists must exist
    for i in $(seq 1 50); do [ -d "$PF_DIR/queue/incoming" ] && [ -d "$PF_DIR/queue/hold" ] && break; sleep 0.1; done
}

# ------------------------------------------------------------------ one load run

# run_load PATH SIZE REP N  (PATH = direct|postseald|postfix; REP=0: warm-up, not recorded)
run_load() {
    local server=$1 size=$2 rep=$3 n=$4 port pid mode qcmd res rc log label
    label="$server size=$size $( [ "$rep" = 0 ] && echo warm-up || echo "rep=$rep")"
    case "$server" in
        direct) port=$SINK_PORT; pid=0; mode=none; qcmd="" ;;
        postseald) port=$PS_PORT; pid=$PS_PID; mode=proc
            qcmd="$POSTSEAL_CLI queue list --json -d $PS_SPOOL" ;;
        postfix) port=$PF_PORT; pid=$PF_MASTER; mode=tree
            local q=$PF_DIR/queue
            qcmd="find $q/maildrop $q/incoming $q/active $q/deferred $q/hold $q/corrupt -type f" ;;
    esac
    log=$TMP/smtp-source-$server-$size-$rep.log; : > "$log"
    local cmd=(smtp-source -s "$SESSIONS" -m "$n" -l "$size" -f a@bench.test -t b@bench.example "127.0.0.1:$port")
    record "timeout -k 5 $RUN_TIMEOUT ${cmd[*]}    # $label; timed until the sink has counted $n more"
    res=$($LIB relayrun --mode "$mode" --pid "$pid" --sink-pid "$SINK_PID" --sink-out "$SINK_OUT" \
            --expect "$n" --queue-cmd "$qcmd" --log "$log" --timeout "$RUN_TIMEOUT" --stall "$STALL" \
            --drain-timeout "$DRAIN_TIMEOUT" --idle-timeout "$IDLE_TIMEOUT" \
            -- timeout -k 5 "$RUN_TIMEOUT" "${cmd[@]}") || {
        problem "$label: the measuring helper failed (server or sink gone?)"
        res='{"rc":-1,"wall_s":null,"ingress_s":1,"drain_s":0,"client_cpu_s":0,"server_cpu_s":0,"sink_cpu_s":0,"server_alive":false,"delivered":0,"delivered_at_done":0,"duplicates":0,"queue_before":null,"queue_after":null,"timed_out":false,"stalled":false}'; }
    local probs=()
    local chk
    chk=$($PY - "$res" "$n" "$server" "$RUN_TIMEOUT" <<'EOF'
import json, sys
r, n, srv, tmo = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
p = []
if r["rc"] != 0:
    p.append("smtp-source exited %s%s" % (r["rc"], " (timed out)" if r["rc"] == 124 else ""))
if r.get("timed_out"):
    p.append("run TIMED OUT after %s s: the sink had %d of %d messages" % (tmo, r["delivered_at_done"], n))
if r.get("stalled"):
    p.append("run STALLED: no delivery for the stall limit; the sink had %d of %d messages (smtp-source finished after %.1f s)" % (r["delivered_at_done"], n, r["ingress_s"]))
if r["delivered"] < n:
    p.append("LOST? the sink counted %d of %d messages" % (r["delivered"], n))
elif r["delivered"] > n:
    p.append("DUPLICATES: the sink counted %d messages for %d sent (%d extra; %d of them after the sink first reached N)" % (
        r["delivered"], n, r["delivered"] - n, r["delivered"] - r["delivered_at_done"]))
if srv != "direct":
    if r.get("queue_before") not in (0, None):
        p.append("the relay's queue was not empty before the run: %s messages" % r["queue_before"])
    if r.get("queue_after") is None:
        p.append("could not list the relay's queue after the run")
    elif r["queue_after"] != 0:
        p.append("the relay's queue still had %d messages %.0f s after the sink had N" % (r["queue_after"], r["drain_s"]))
    if not r.get("server_alive", True):
        p.append("relay process gone after the run")
print("\n".join(p))
EOF
)
    if [ -n "$chk" ]; then while read -r l; do probs+=("$l"); done <<< "$chk"; fi
    rc=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["rc"])' "$res")
    if [ "$rc" != 0 ]; then
        probs+=("smtp-source output: $(grep -v '^$' "$log" | head -3 | tr '\n' ' ')")
    elif grep -qiE 'fatal|error|warning' "$log"; then
        probs+=("smtp-source complained: $(grep -iE 'fatal|error|warning' "$log" | head -3 | tr '\n' ' ')")
    fi
    case "$server" in
        postseald) kill -0 "$PS_PID" 2>/dev/null || probs+=("postseald DIED during the run; last log lines: $(tail -5 "$PS_LOG" | tr '\n' ' ')") ;;
        postfix) kill -0 "$PF_MASTER" 2>/dev/null || probs+=("Postfix master DIED during the run") ;;
    esac
    kill -0 "$SINK_PID" 2>/dev/null || probs+=("smtp-sink DIED during the run")
    local w
    w=$($PY - "$res" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
out = []
if not r.get("idle_before_ok", True):
    out.append("machine still %.0f%% busy after waiting %.0f s for it to go idle before the run (%s)" % (
        r["idle_busy_pct"], r["idle_wait_s"], ", ".join("%s[%d] %.1fs" % (h["comm"], h["pid"], h["cpu_s"]) for h in r["idle_hogs"]) or "kernel?"))
wall = r.get("wall_s") or r.get("ingress_s") or 1
if r.get("foreign_cpu_s", 0) > 0.05 * wall + 0.1:
    out.append("other processes used %.2f CPU s during the %.2f s run: %s" % (
        r["foreign_cpu_s"], wall, ", ".join("%s[%d] %.2fs" % (f["comm"], f["pid"], f["cpu_s"]) for f in r["foreign_procs"])))
print("\n".join(out))
EOF
)
    if [ -n "$w" ]; then
        while read -r l; do warn "$label: $l"; done <<< "$w"
    fi
    local p
    for p in "${probs[@]}"; do problem "$label: $p"; done
    log "$label: $($PY -c '
import json, sys
r, n = json.loads(sys.argv[1]), int(sys.argv[2])
w = r.get("wall_s")
print("%d msgs end to end in %s = %s msg/s (smtp-source %.2fs), relay CPU %.2fs, sink +%d, queue after %s" % (
    n, "%.2fs" % w if w else "n/a", round(n / w) if w else "n/a", r["ingress_s"], r["server_cpu_s"],
    r["delivered"], r["queue_after"]))' "$res" "$n")"
    [ "$rep" = 0 ] && return 0
    $PY - "$res" "$server" "$size" "$rep" "$n" "$SESSIONS" "${#probs[@]}" >> "$TMP/runs.jsonl" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
r.update(server=sys.argv[2], size=int(sys.argv[3]), rep=int(sys.argv[4]), n=int(sys.argv[5]),
         sessions=int(sys.argv[6]), problems_n=int(sys.argv[7]))
print(json.dumps(r))
EOF
}

bench_path() {   # PATH SIZE
    local server=$1 size=$2 rep warm
    warm=$((N / 10)); [ "$warm" -gt 1000 ] && warm=1000; [ "$warm" -lt 50 ] && warm=50
    start_sink "$server-$size" || return 0
    case "$server" in
        postseald) start_postseald "$size" || { stop_sink; return 0; } ;;
        postfix) start_postfix "$size" || { stop_sink; return 0; } ;;
    esac
    run_load "$server" "$size" 0 "$warm"
    for rep in $(seq 1 "$REPS"); do
        run_load "$server" "$size" "$rep" "$N"
    done
    case "$server" in
        postseald)
            grep -E 'level=(error|crit|fatal)|event=(deferred|bounced)' "$PS_LOG" | head -5 | while read -r l; do problem "postseald log: $l"; done || true
            grep -E 'level=warn' "$PS_LOG" | head -5 | while read -r l; do warn "postseald log ($size B): $l"; done || true
            stop_postseald
            rm -rf "$TMP/postseald-$size/spool" ;;
        postfix)
            grep -E 'fatal|panic|error|status=(deferred|bounced|expired)' "$PF_DIR/maillog" | grep -v 'NIS domain name' | head -5 | while read -r l; do problem "Postfix log: $l"; done || true
            # performance warnings (e.g. qmgr "mail for ... is using up N of N active queue
            # entries") describe Postfix under this load: shown, but not a failed run
            grep -E 'warning' "$PF_DIR/maillog" | grep -vE 'NIS domain name|fatal|panic|error' | head -5 | while read -r l; do warn "Postfix log ($size B): $l"; done || true
            # every delivery must have gone to the sink and nowhere else
            local other
            other=$(grep -E ' status=sent ' "$PF_DIR/maillog" | grep -vc "relay=127.0.0.1\[127.0.0.1\]:$SINK_PORT," || true)
            [ "$other" = 0 ] || problem "Postfix log: $other deliveries to a next hop other than the sink"
            stop_postfix
            rm -rf "$PF_DIR/queue" ;;
    esac
    stop_sink
}

# ------------------------------------------------------------------ machine info

BUILD_INFO="not run"
if [ "$DO_POSTSEALD" = 1 ]; then postseald_build_info; fi
bench_prelude

# ------------------------------------------------------------------ the runs

for size in $SIZES; do
    if [ "$DO_DIRECT" = 1 ]; then bench_path direct "$size"; fi
    if [ "$DO_POSTSEALD" = 1 ]; then bench_path postseald "$size"; fi
    if [ "$DO_POSTFIX" = 1 ]; then bench_path postfix "$size"; fi
done

# ------------------------------------------------------------------ report

note "Everything ran on the same $(nproc)-core machine: smtp-source, the relay and smtp-sink compete for CPU, so msg/s is a whole-system figure; smtp-source's and smtp-sink's CPU are reported separately."
note "Each cell (path × size): a fresh smtp-sink, a fresh relay with an empty spool/queue pointed at that sink, one unrecorded warm-up run (N/10, at most 1000 messages), then the repetitions back to back; before each run the relay's queue is empty (checked)."
note "Sink: Postfix smtp-sink -c (single process, answers 250 to everything, PIPELINING, no disk); its counter (sess/quit/mesg, updated at every '.') is read every 5 ms, so a run's end is known to ±5 ms."
note "postseald: threads: 2, durable spool (250 after group-committed fdatasync), relayhost [127.0.0.1]:SINKPORT, delivery defaults (concurrency 10 connections per thread = 20, 100 messages per connection), a message leaves the spool once its DONE records are durable; logging to a file (connect/disconnect and one delivered line per recipient)."
note "Postfix: private instance (own config and queue directory), no chroot, default durability (cleanup fsyncs the queue file before smtpd answers 250), default_process_limit = $PF_PROCESS_LIMIT, relayhost = [127.0.0.1]:SINKPORT and nothing else (mydestination, relay_domains, transport maps, fallback relay all empty; local/virtual transports are error:), soft_bounce = yes and notify_classes empty so it never generates mail; destination concurrency and connection caching at their defaults (default_destination_concurrency_limit 20, smtp_connection_cache_on_demand), in_flow_delay at its default (1 s). The maillog is checked afterwards: every status=sent went to the sink."
note "Relay CPU: postseald = its process utime+stime; Postfix = master + every live descendant (smtpd, cleanup, qmgr, smtp, trivial-rewrite, scache, anvil, postlogd, ...) + master's cutime/cstime for reaped children; measured from just before smtp-source starts until the queue has drained plus 1 s (so the work of removing delivered messages is included). /proc clock ticks (1/$(getconf CLK_TCK) s); kernel work not charged to a process is not counted for either relay."
note "Before every run the script waits (up to $IDLE_TIMEOUT s) until the whole machine is below 10% busy over 1 s; CPU used by other processes during a run is shown per run and flagged under Warnings."
note "The direct rate is the ceiling of this load generator + sink pair on this machine (smtp-source and smtp-sink alone), not of the network path; a relay does at least twice the SMTP work per message on the same cores, so 50% of direct is not a bad figure on a 2-core machine."

write_meta <<EOF
    "postseald_tree": (lambda st: ("not clean, the binary may include uncommitted or untracked sources: " + ", ".join(l[3:] for l in st[:12]) + (" ..." if len(st) > 12 else "")) if st else "clean")(
        [l for l in subprocess.run("git -C '$REPO' status --porcelain -- . ':(exclude)bench'", shell=True, capture_output=True, text=True, timeout=10).stdout.splitlines() if l.strip()]),
    "postseald_binary": "$POSTSEALD ($BUILD_INFO)",
    "postfix_version": pfv if $DO_POSTFIX == 1 else "not run",
    "smtp_source": "smtp-source and smtp-sink (Postfix " + pfv + ")",
    "python": platform.python_version(),
    "sessions": $SESSIONS,
    "reps": $REPS,
    "target_pct": $TARGET_PCT,
    "target_cpu_ms": $TARGET_CPU_MS,
EOF
finish relayreport
