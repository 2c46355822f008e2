#!/usr/bin/env bash
# End-to-end SMTP relay benchmark: load tool -> relay -> sink, for postseald and a
# private Postfix instance relaying to the same kind of sink, plus the direct load
# tool -> sink rate (no relay: the ceiling).  Loopback only (127.0.0.1), every run
# bounded in count and time.
#
#   bench/relay.sh            full run, writes bench/results/relay-YYYY-MM-DD.md
#                             and a chart of it, relay-YYYY-MM-DD.png
#   bench/relay.sh --smoke    a few seconds, postseald only, for CI
#   bench/relay.sh --driver postseal-bench
#                             the same with our io_uring load tool and sink, which
#                             drive more load than smtp-source and report latency
#   bench/relay.sh --tls      TLS on both legs (implies --driver postseal-bench):
#                             postseal-bench send --starttls --tls-resume -> relay
#                             (STARTTLS offered) -> postseal-bench sink offering
#                             STARTTLS, the relay's outbound TLS required (postseald
#                             tls.outbound: encrypt; Postfix smtp_tls_security_level =
#                             encrypt); sizes 1024 4096, N=10000; writes
#                             bench/results/tls-YYYY-MM-DD.md with the in-memory
#                             handshake rate of crypto/tls.h (postseal-bench
#                             tls-handshake) beside it
#   bench/relay.sh --dkim     DKIM signing on the relay: postseald signs every message
#                             twice (RSA-2048 + Ed25519 keys made with `postseal
#                             keygen`, dkim: in its YAML) against Postfix with
#                             OpenDKIM as a milter (a private foreground instance,
#                             RSA-2048; --opendkim-dual: a second one, Ed25519);
#                             size 4096, N=10000; writes bench/results/dkim-YYYY-MM-DD.md
#                             with the raw signing rates beside it (postseal-bench
#                             dkim-speed, openssl speed rsa2048 ed25519)
#
# Drivers:
#   smtp-source (default): smtp-source -> relay -> Postfix smtp-sink.  A run is
#     timed from the start of smtp-source until the sink's counter (smtp-sink -c)
#     has gone up by N.
#   postseal-bench: postseal-bench send -> relay -> postseal-bench sink, a fresh
#     sink per run.  A run is timed from the start of the sender until the sink's
#     last 250 (from the sink's report); the sender's report gives the end-of-DATA
#     latency (p50/p99) shown in the results table.
# Then the relay's queue must drain.  Every run checks that the sink got exactly N
# (more = duplicates, reported) and that the relay's queue is empty afterwards.
# With --tls it also checks that every session on both legs ran TLS: the sender's
# handshakes equal its sessions, the sink's equal the relay's connections to it.
# With --dkim the sink keeps every message of each relay's warm-up run (smtp-sink -d,
# postseal-bench sink --write-dir; the measured runs keep nothing), and each of them
# must carry the relay's signatures and verify with python3-dkim against the records
# `postseal keygen` and opendkim-genkey printed (no DNS: the records are handed in).
# The relay CPU of Postfix then includes OpenDKIM's (its process, all threads), also
# shown on its own.
#
# Prints a JSON summary on stdout; progress goes to stderr.  Exit status 0 only if
# every load tool run succeeded, every count matched, every queue drained and no
# server died.
#
# Environment:
#   POSTSEALD      daemon binary (default: build/postseald in the repository)
#   POSTSEAL_CLI   command-line tool (default: postseal next to POSTSEALD)
#   POSTSEAL_BENCH load tool and sink for --driver postseal-bench (default:
#                  postseal-bench next to POSTSEALD)
#   GNUPLOT        draws the chart (default: gnuplot; none found = no chart, a note)
#   BENCH_TMP      parent of the scratch directory (default: /tmp)
#   OPENDKIM_TMP   parent of OpenDKIM's private folder with --dkim (default: /run;
#                  OpenDKIM refuses files below a folder others can write, like /tmp)
#   POSTFIX_EXTRA  lines appended to the Postfix main.cf (experiments; shown in the results)
#   POSTSEALD_EXTRA  lines appended to the postseald YAML (experiments; shown in the results)
#
# Options:
#   --smoke              1 KiB, N=2000, one repetition, postseald only, no idle wait
#   --sizes "A B C"      message sizes in bytes (default "1024 4096 65536")
#   -n N                 messages per run, every size (default 20000)
#   --reps R             repetitions per cell (default 3)
#   --sessions S         concurrent sessions: smtp-source -s, postseal-bench send
#                        --connections (default 50)
#   --threads T          postseald worker threads (default: half the cores, at
#                        least 1: the load tool and the sink have the other half)
#   --driver D           smtp-source (default) or postseal-bench
#   --per-conn M         postseal-bench send --per-conn: messages per connection
#                        (default 1, like smtp-source; 0 = no limit)
#   --no-direct          skip the direct load tool -> sink runs
#   --no-postfix         skip Postfix
#   --no-postseald       skip postseald
#   --tls                TLS on both legs (see above); a self-signed EC P-256
#                        certificate made with openssl in the scratch directory serves
#                        the relays and the sink
#   --no-tls-resume      with --tls: the sender does not resume sessions (every
#                        inbound handshake full)
#   --dkim               DKIM signing on both relays (see above); the load's sender is
#                        a@bench.test (smtp-source -f, postseal-bench send --from), so
#                        From: is in the signing domain bench.test
#   --opendkim-dual      with --dkim: Postfix gets two signatures per message too, as
#                        postseald makes: a second OpenDKIM instance (Ed25519) chained
#                        after the RSA one (OpenDKIM 2.11.0 has one algorithm per
#                        instance)
#   --run-timeout S      hard limit for one run, seconds (default 600; smoke 60;
#                        at most 3600, 3500 with --driver postseal-bench)
#   --out FILE           results file (default bench/results/relay-YYYY-MM-DD.md, with
#                        --driver postseal-bench relay-postseal-bench-YYYY-MM-DD.md, with
#                        --tls tls-YYYY-MM-DD.md, with --dkim dkim-YYYY-MM-DD.md;
#                        in --smoke mode the default is a file in the scratch dir, removed);
#                        the chart goes beside it, FILE with .png for .md
#   --keep               keep the scratch directory
set -euo pipefail

BENCH_NAME=relay
. "$(dirname "$0")/common.sh"

SIZES="1024 4096 65536"
N=20000
REPS=3
SESSIONS=50
DRIVER=smtp-source
PER_CONN=""
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
TLS=0
TLS_RESUME=1
DKIM=0
OPENDKIM_DUAL=0
SENDER=a@bench.test    # the load's envelope sender and From: (smtp-source, postseal-bench send)
DKIM_DOMAIN=${SENDER#*@}
SIZES_SET=0; N_SET=0; DRIVER_SET=0

while [ $# -gt 0 ]; do
    case "$1" in
        --smoke) SMOKE=1 ;;
        --sizes) SIZES=$2; SIZES_SET=1; shift ;;
        -n) N=$2; N_SET=1; shift ;;
        --reps) REPS=$2; shift ;;
        --sessions) SESSIONS=$2; shift ;;
        --threads) PS_THREADS=$2; shift ;;
        --driver) DRIVER=$2; DRIVER_SET=1; shift ;;
        --tls) TLS=1 ;;
        --no-tls-resume) TLS_RESUME=0 ;;
        --dkim) DKIM=1 ;;
        --opendkim-dual) OPENDKIM_DUAL=1 ;;
        --per-conn) PER_CONN=$2; shift ;;
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

[[ "$PS_THREADS" =~ ^[0-9]+$ ]] && [ "$PS_THREADS" -ge 1 ] && [ "$PS_THREADS" -le 64 ] || die "bad --threads '$PS_THREADS' (1..64)"

if [ "$TLS" = 1 ]; then
    [ "$DRIVER_SET" = 0 ] || [ "$DRIVER" = postseal-bench ] || die "--tls needs --driver postseal-bench (smtp-source cannot do TLS)"
    DRIVER=postseal-bench
    [ "$SIZES_SET" = 1 ] || SIZES="1024 4096"
    [ "$N_SET" = 1 ] || N=10000
fi
if [ "$DKIM" = 1 ]; then
    [ "$TLS" = 0 ] || die "--dkim and --tls: one at a time"
    [ "$SIZES_SET" = 1 ] || SIZES=4096
    [ "$N_SET" = 1 ] || N=10000
    RESULTS_NAME=dkim
fi
[ "$OPENDKIM_DUAL" = 0 ] || [ "$DKIM" = 1 ] || die "--opendkim-dual needs --dkim"
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
case "$DRIVER" in
    smtp-source)
        [ -z "$PER_CONN" ] || die "--per-conn needs --driver postseal-bench"
        LOAD_NAME=smtp-source; SINK_NAME=smtp-sink ;;
    postseal-bench)
        PER_CONN=${PER_CONN:-1}
        [[ "$PER_CONN" =~ ^[0-9]+$ ]] && [ "$PER_CONN" -le 1000000 ] || die "bad --per-conn '$PER_CONN'"
        # the sink of a run lives at most 3600 s (postseal-bench's limit): the run, the
        # drain and the wait for the relay to let go of the sink must fit in it
        [ "$RUN_TIMEOUT" -le 3500 ] || die "--run-timeout at most 3500 with --driver postseal-bench"
        LOAD_NAME="postseal-bench send"; SINK_NAME="postseal-bench sink"
        RESULTS_NAME=relay-postseal-bench
        [ "$TLS" = 0 ] || RESULTS_NAME=tls
        [ "$DKIM" = 0 ] || RESULTS_NAME=dkim-postseal-bench ;;
    *) die "unknown --driver '$DRIVER' (smtp-source or postseal-bench)" ;;
esac

resolve_postseald
if [ "$DO_POSTSEALD" = 1 ]; then check_postseald_bin; fi
if [ "$DRIVER" = postseal-bench ]; then
    check_postseal_bench_bin
else
    require_smtp_tool smtp-source
    require_smtp_tool smtp-sink
fi
if [ "$DO_POSTFIX" = 1 ]; then require_postfix_instance; fi
OPENDKIM_USER=""
if [ "$DKIM" = 1 ]; then
    $PY -c 'import dkim, nacl.signing' 2>/dev/null || die "--dkim needs python3-dkim and python3-nacl (apt-get install python3-dkim python3-nacl): the relays' signatures are verified"
    command -v openssl >/dev/null || die "--dkim needs openssl (openssl speed; OpenDKIM's Ed25519 key)"
    if [ "$DO_POSTSEALD" = 1 ]; then
        "$POSTSEAL_CLI" keygen --help > /dev/null 2>&1 || die "--dkim: $POSTSEAL_CLI has no keygen command (rebuild it)"
        check_postseal_bench_bin          # postseal-bench dkim-speed
    fi
    if [ "$DO_POSTFIX" = 1 ]; then
        command -v opendkim >/dev/null || die "--dkim needs opendkim (apt-get install opendkim opendkim-tools)"
        command -v opendkim-genkey >/dev/null || die "--dkim needs opendkim-genkey (apt-get install opendkim-tools)"
        if id opendkim >/dev/null 2>&1; then OPENDKIM_USER=opendkim; else OPENDKIM_USER=nobody; fi
    fi
fi
# smtp-sink refuses to run as root without -u
SINK_USER=()
if [ "$(id -u)" = 0 ]; then
    if id postfix >/dev/null 2>&1; then SINK_USER=(-u postfix); else SINK_USER=(-u nobody); fi
fi

setup_scratch postseal-relaybench

# ------------------------------------------------------------------ TLS (--tls)

# one certificate for every TLS server of the run (relays and sink): EC P-256, as the
# integration tests' PKI makes them; no client checks it (encrypt, not verify)
TLS_CERT=""; TLS_KEY=""
make_tls_cert() {
    local d=$TMP/pki
    mkdir -p "$d"
    TLS_CERT=$d/cert.pem; TLS_KEY=$d/key.pem
    local cmd=(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes
               -keyout "$TLS_KEY" -out "$TLS_CERT" -days 30 -subj /CN=bench.test
               -addext "subjectAltName=DNS:bench.test,IP:127.0.0.1")
    record "${cmd[*]}"
    "${cmd[@]}" > /dev/null 2> "$d/openssl.err" || die "openssl could not make the certificate: $(tail -1 "$d/openssl.err")"
    chmod 600 "$TLS_KEY"
}
# the sink's and the sender's TLS options (empty without --tls)
SINK_TLS=(); SEND_TLS=()
if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null || die "--tls needs openssl (the certificate is made with it)"
    make_tls_cert
    SINK_TLS=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
    SEND_TLS=(--starttls)
    [ "$TLS_RESUME" = 0 ] || SEND_TLS+=(--tls-resume)
fi

# tls_raw: BoringSSL's raw figure, the in-memory handshake rate of crypto/tls.h with
# the run's certificate, full and resumed, RAW_REPS runs each (interleaved, each on an
# idle machine; the fastest counts: on a shared machine noise only slows a run down);
# $TMP/tls-raw.json holds the fastest per kind and every run's rate. Then, for Postfix's
# library, `openssl speed` of the same primitives (context only).
RAW_SECONDS=3; RAW_REPS=3
tls_raw() {
    local mode args rep
    [ "$SMOKE" = 1 ] && { RAW_SECONDS=0.5; RAW_REPS=1; }
    for rep in $(seq 1 "$RAW_REPS"); do
        for mode in full resume; do
            args=(--cert "$TLS_CERT" --key "$TLS_KEY" --seconds "$RAW_SECONDS" --json "$TMP/tls-raw-$mode-$rep.json")
            [ "$mode" = resume ] && args+=(--resume)
            $LIB waitidle --timeout "$IDLE_TIMEOUT" > /dev/null || warn "tls-handshake $mode #$rep: the machine was not idle"
            record "$POSTSEAL_BENCH tls-handshake ${args[*]}"
            if "$POSTSEAL_BENCH" tls-handshake "${args[@]}" > "$TMP/tls-raw-$mode-$rep.txt" 2>&1; then
                log "raw handshakes ($mode #$rep): $(sed -n 2p "$TMP/tls-raw-$mode-$rep.txt")"
            else
                problem "postseal-bench tls-handshake $mode failed: $(tail -2 "$TMP/tls-raw-$mode-$rep.txt" | tr '\n' ' ')"
            fi
        done
    done
    $PY - "$TMP" <<'EOF'
import json, os, sys
t = sys.argv[1]
out = {"runs": {}}
for m in ("full", "resume"):
    rs = []
    for f in sorted(os.listdir(t)):
        if f.startswith("tls-raw-%s-" % m) and f.endswith(".json"):
            try:
                rs.append(json.load(open(os.path.join(t, f))))
            except ValueError:
                pass
    if rs:
        out[m] = max(rs, key=lambda r: r["pairs_per_s"])
        out["runs"][m] = [r["pairs_per_s"] for r in rs]
json.dump(out, open(os.path.join(t, "tls-raw.json"), "w"))
EOF
    [ "$SMOKE" = 1 ] && return 0
    $LIB waitidle --timeout "$IDLE_TIMEOUT" > /dev/null || warn "openssl speed: the machine was not idle"
    record "openssl speed -seconds 3 ecdsap256 ecdhx25519    # OpenSSL $(openssl version | awk '{print $2}'), Postfix's library: context only"
    openssl speed -seconds 3 ecdsap256 ecdhx25519 2> /dev/null | grep -E 'sign|op |ecdsa|ecdh' > "$TMP/openssl-speed.txt" || true
}

# ------------------------------------------------------------------ DKIM (--dkim)

# The keys, made once per invocation: postseald's with `postseal keygen` in $TMP/dkim
# (its zone-file lines kept), OpenDKIM's with opendkim-genkey (RSA) and, for
# --opendkim-dual, openssl genpkey (Ed25519) in OD_DIR, a private folder under /run:
# OpenDKIM refuses a configuration or key file with an ancestor others may write, as
# /tmp is. $TMP/dkim/records.json maps every SELECTOR._domainkey.DOMAIN to the record
# its tool printed: the verifier's "DNS".
DKIM_DIR=""; OD_DIR=""
PS_DKIM_KEYS=()        # "DOMAIN SELECTOR FILE" for postseald's dkim.keys
OD_KEYS=()             # "SELECTOR FILE" for OpenDKIM
make_dkim_keys() {
    local sel alg
    DKIM_DIR=$TMP/dkim
    mkdir -p "$DKIM_DIR/postseald" "$DKIM_DIR/opendkim"
    if [ "$DO_POSTSEALD" = 1 ]; then
        for sel in ps-rsa:rsa ps-ed:ed25519; do
            alg=${sel#*:}; sel=${sel%%:*}
            record "$POSTSEAL_CLI keygen --domain $DKIM_DOMAIN --selector $sel --algorithm $alg --dir $DKIM_DIR/postseald > $DKIM_DIR/postseald/$sel.zone"
            "$POSTSEAL_CLI" keygen --domain "$DKIM_DOMAIN" --selector "$sel" --algorithm "$alg" \
                --dir "$DKIM_DIR/postseald" > "$DKIM_DIR/postseald/$sel.zone" 2> "$DKIM_DIR/postseald/$sel.err" \
                || die "postseal keygen ($alg) failed: $(tr '\n' ' ' < "$DKIM_DIR/postseald/$sel.err")"
            PS_DKIM_KEYS+=("$DKIM_DOMAIN $sel $DKIM_DIR/postseald/$DKIM_DOMAIN.$sel.key")
        done
    fi
    if [ "$DO_POSTFIX" = 1 ]; then
        OD_DIR=$(mktemp -d "${OPENDKIM_TMP:-/run}/postseal-relaybench-opendkim.XXXXXX") \
            || die "cannot make a private folder for OpenDKIM under ${OPENDKIM_TMP:-/run} (set OPENDKIM_TMP)"
        chmod 755 "$OD_DIR"
        local d=$OD_DIR/keys
        mkdir -p "$d"
        record "opendkim-genkey -b 2048 -d $DKIM_DOMAIN -s od-rsa -D $d"
        opendkim-genkey -b 2048 -d "$DKIM_DOMAIN" -s od-rsa -D "$d" 2> "$d/genkey.err" \
            || die "opendkim-genkey failed: $(tr '\n' ' ' < "$d/genkey.err")"
        OD_KEYS+=("od-rsa $d/od-rsa.private")
        if [ "$OPENDKIM_DUAL" = 1 ]; then
            record "openssl genpkey -algorithm ed25519 -out $d/od-ed.private    # p= its raw public key (RFC 8463 §4)"
            openssl genpkey -algorithm ed25519 -out "$d/od-ed.private" 2> "$d/genpkey.err" \
                || die "openssl genpkey ed25519 failed: $(tr '\n' ' ' < "$d/genpkey.err")"
            printf 'od-ed._domainkey IN TXT ( "v=DKIM1; k=ed25519; p=%s" )\n' \
                "$(openssl pkey -in "$d/od-ed.private" -pubout -outform DER | tail -c 32 | base64 -w0)" > "$d/od-ed.txt"
            OD_KEYS+=("od-ed $d/od-ed.private")
        fi
        # OpenDKIM refuses keys others can read (RequireSafeKeys) and runs as its user
        chown -R "$OPENDKIM_USER" "$d"
        chmod 600 "$d"/*.private
        chmod 700 "$d"
        cp "$d"/*.txt "$DKIM_DIR/opendkim/"
    fi
    $PY - "$DKIM_DIR" "$DKIM_DOMAIN" <<'EOF'
import json, os, re, sys
top, domain = sys.argv[1], sys.argv[2]
records = {}
for sub in ("postseald", "opendkim"):
    for f in sorted(os.listdir(os.path.join(top, sub))):
        if not (f.endswith(".zone") or f.endswith(".txt")):
            continue
        text = open(os.path.join(top, sub, f)).read()
        owner = text.split()[0]
        owner = owner[:-1] if owner.endswith(".") else owner + "." + domain
        body = text[text.index("("):text.index(")") + 1]
        records[owner.lower()] = "".join(re.findall(r'"([^"]*)"', body))
json.dump(records, open(os.path.join(top, "records.json"), "w"), indent=1)
EOF
}

# dkim_verify_dumps SERVER SIZE DIR EXPECT: every message the sink kept (up to 1000 of
# them) must carry the relay's signatures, and each must verify (python3-dkim, the
# records of records.json handed in as DNS); $TMP/dkim-verify-SERVER-SIZE.json
dkim_verify_dumps() {
    local server=$1 size=$2 dir=$3 expect=$4 want out msg
    want=rsa-sha256
    if [ "$server" = postseald ] || [ "$OPENDKIM_DUAL" = 1 ]; then want=rsa-sha256,ed25519-sha256; fi
    out=$TMP/dkim-verify-$server-$size.json
    $PY - "$dir" "$DKIM_DIR/records.json" "$want" "$expect" "$DKIM_DOMAIN" > "$out" <<'EOF'
import json, os, random, re, sys
import dkim
d, records, want = sys.argv[1], json.load(open(sys.argv[2])), set(sys.argv[3].split(","))
expect, domain = int(sys.argv[4]), sys.argv[5]

def dnsfunc(name, timeout=5):
    r = records.get(name.decode().rstrip(".").lower())
    return r.encode() if r is not None else None

def message(raw):
    # smtp-sink -d writes its own fields first (X-Client-*, X-Helo/Mail/Rcpt-Args and
    # a three-line Received:), then the message as received
    lines = raw.split(b"\n")
    if not lines[0].startswith(b"X-Client-Addr:"):
        return raw                      # postseal-bench sink: the message alone
    i = 0
    while i < len(lines) and re.match(rb"X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args):", lines[i]):
        i += 1
    if i < len(lines) and lines[i].startswith(b"Received:"):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    return b"\n".join(lines[i:])

files = sorted(os.listdir(d)) if os.path.isdir(d) else []
sample = files if len(files) <= 1000 else random.Random(1).sample(files, 1000)
res = {"want": sorted(want), "files": len(files), "expect": expect, "checked": 0, "ok": 0,
       "signatures": 0, "algorithms": {}, "failures": []}
for f in sample:
    msg = message(open(os.path.join(d, f), "rb").read())
    head = msg.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    n = len(re.findall(rb"(?im)^dkim-signature:", head))
    algs, bad = set(), []
    for i in range(n):
        v = dkim.DKIM(msg)
        try:
            ok = v.verify(idx=i, dnsfunc=dnsfunc)
            why = ""
        except dkim.DKIMException as e:
            ok, why = False, str(e)
        fields = getattr(v, "signature_fields", None) or {}
        a = fields.get(b"a", b"?").decode(errors="replace")
        dd = fields.get(b"d", b"").decode(errors="replace")
        res["algorithms"][a] = res["algorithms"].get(a, 0) + 1
        if ok and dd.lower() == domain:
            algs.add(a)
        else:
            bad.append("signature %d (a=%s d=%s) does not verify%s" % (i, a, dd, ": " + why if why else ""))
    res["checked"] += 1
    res["signatures"] += n
    if not bad and want <= algs:
        res["ok"] += 1
    elif len(res["failures"]) < 3:
        res["failures"].append("%s: %d signature(s), passing %s; %s" % (
            f, n, ",".join(sorted(algs)) or "none", "; ".join(bad) or "a wanted algorithm is missing"))
print(json.dumps(res))
EOF
    msg=$($PY - "$out" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
p = []
if r["files"] != r["expect"]:
    p.append("the sink kept %d messages of the warm-up run, want %d" % (r["files"], r["expect"]))
if r["checked"] == 0 or r["ok"] != r["checked"]:
    p.append("DKIM: %d of %d messages checked carry verifying %s signatures: %s" % (
        r["ok"], r["checked"], " + ".join(r["want"]), " | ".join(r["failures"])))
print("\n".join(p))
EOF
) || msg="DKIM: the verifier failed: $(head -c 300 "$out")"
    if [ -n "$msg" ]; then
        while read -r l; do problem "$server size=$size: $l"; done <<< "$msg"
    else
        log "$server size=$size: DKIM: $($PY -c 'import json,sys; r=json.load(open(sys.argv[1])); print("%d of %d warm-up messages checked, %d signatures (%s), all verify" % (r["ok"], r["files"], r["signatures"], ", ".join("%s %d" % kv for kv in sorted(r["algorithms"].items()))))' "$out")"
    fi
}

# OpenDKIM: private instances in the foreground, one per key: OpenDKIM 2.11.0 takes the
# signing algorithm from SignatureAlgorithm for all its keys (a per-key algorithm came
# later), so --opendkim-dual chains two milters, RSA then Ed25519. They are no
# descendants of Postfix's master: their CPU (each /proc entry: every thread) is read
# around each run and added to Postfix's.
OD_PIDS=(); OD_PORTS=(); OD_LOGS=()
start_opendkim() {    # $1 = label
    local k n=0 dir conf port alg i up
    for k in "${OD_KEYS[@]}"; do
        n=$((n + 1))
        dir=$OD_DIR/$1-$n; conf=$dir/opendkim.conf
        mkdir -p "$dir"
        chown "$OPENDKIM_USER" "$dir"
        port=$(freeport)
        alg=rsa-sha256; [ "${k%% *}" != od-ed ] || alg=ed25519-sha256
        cat > "$conf" <<EOF
# private benchmark instance: signs all mail from 127.0.0.1 (InternalHosts), verifies none
Mode                    s
Canonicalization        relaxed/relaxed
Domain                  $DKIM_DOMAIN
Selector                ${k%% *}
KeyFile                 ${k#* }
SignatureAlgorithm      $alg
Socket                  inet:$port@127.0.0.1
InternalHosts           127.0.0.1
UserID                  $OPENDKIM_USER
Background              no
Syslog                  no
PidFile                 $dir/opendkim.pid
EOF
        cp "$conf" "$TMP/opendkim-$n.conf"
        record "opendkim -f -x $conf > $dir/opendkim.log 2>&1 &"
        opendkim -f -x "$conf" > "$dir/opendkim.log" 2>&1 &
        OD_PIDS+=("$!"); OD_PORTS+=("$port"); OD_LOGS+=("$dir/opendkim.log")
        up=0
        for i in $(seq 1 100); do
            kill -0 "${OD_PIDS[-1]}" 2>/dev/null || break
            if $PY -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$port" 2>/dev/null; then
                up=1; break
            fi
            sleep 0.1
        done
        if [ "$up" = 0 ]; then
            problem "OpenDKIM ($alg) did not come up on 127.0.0.1:$port: $(tail -3 "$dir/opendkim.log" | tr '\n' ' ')"
            stop_opendkim
            return 1
        fi
        log "OpenDKIM pid ${OD_PIDS[-1]} on 127.0.0.1:$port ($alg, selector ${k%% *})"
    done
}
stop_opendkim() {
    local pid i
    for pid in ${OD_PIDS[@]+"${OD_PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in ${OD_PIDS[@]+"${OD_PIDS[@]}"}; do
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    OD_PIDS=(); OD_PORTS=(); OD_LOGS=()
}
# opendkim_ticks: the CPU clock ticks of every OpenDKIM instance, summed; fails if one
# is gone
opendkim_ticks() {
    local pid sum=0 t
    for pid in "${OD_PIDS[@]}"; do
        t=$($LIB cpu proc "$pid" 2>/dev/null | awk '{print $1}') && [ -n "$t" ] || return 1
        sum=$((sum + t))
    done
    echo "$sum"
}

# dkim_raw: the raw signing rates on one core. postseal-bench dkim-speed (BoringSSL and
# crypto/dkim.h; 3 runs, each after an idle wait, the one with the fastest dual rate
# kept in $TMP/dkim-speed.json), then openssl speed rsa2048 ed25519 (the library of
# Postfix and OpenDKIM) in $TMP/openssl-speed-dkim.txt.
dkim_raw() {
    local rep seconds=3 reps=3
    [ "$SMOKE" = 1 ] && { seconds=0.5; reps=1; }
    if [ "$DO_POSTSEALD" = 1 ]; then
        for rep in $(seq 1 "$reps"); do
            $LIB waitidle --timeout "$IDLE_TIMEOUT" > /dev/null || warn "dkim-speed #$rep: the machine was not idle"
            record "$POSTSEAL_BENCH dkim-speed --seconds $seconds --json $TMP/dkim-speed-$rep.json"
            if "$POSTSEAL_BENCH" dkim-speed --seconds "$seconds" --json "$TMP/dkim-speed-$rep.json" > "$TMP/dkim-speed-$rep.txt" 2>&1; then
                log "dkim-speed #$rep: $(sed -n 4p "$TMP/dkim-speed-$rep.txt" | tr -s ' ')"
            else
                problem "postseal-bench dkim-speed failed: $(tail -2 "$TMP/dkim-speed-$rep.txt" | tr '\n' ' ')"
            fi
        done
        $PY - "$TMP" <<'EOF'
import json, os, sys
t = sys.argv[1]
rs = []
for f in sorted(os.listdir(t)):
    if f.startswith("dkim-speed-") and f.endswith(".json"):
        try:
            r = json.load(open(os.path.join(t, f)))
            r["text"] = open(os.path.join(t, f[:-5] + ".txt")).read()
            rs.append(r)
        except (OSError, ValueError):
            pass
if rs:
    best = max(rs, key=lambda r: r["dual_messages_per_s"])
    best["runs"] = [{k: r[k] for k in ("rsa2048_signs_per_s", "ed25519_signs_per_s",
                                        "dual_messages_per_s", "overhead_ms_per_msg")} for r in rs]
    json.dump(best, open(os.path.join(t, "dkim-speed.json"), "w"))
EOF
    fi
    [ "$SMOKE" = 1 ] && return 0
    $LIB waitidle --timeout "$IDLE_TIMEOUT" > /dev/null || warn "openssl speed: the machine was not idle"
    record "openssl speed -seconds 3 rsa2048 ed25519    # OpenSSL $(openssl version | awk '{print $2}'), the library of Postfix and OpenDKIM"
    openssl speed -seconds 3 rsa2048 ed25519 2> /dev/null | grep -E 'sign|rsa|EdDSA' > "$TMP/openssl-speed-dkim.txt" || true
}

# dkim_wait_sink_idle PORT: wait (at most 10 s) until nothing is connected to the sink,
# so that stopping it between the warm-up and the measured runs cuts no delivery short
dkim_wait_sink_idle() {
    $PY - "$1" <<'EOF'
import sys, time
port = int(sys.argv[1])
def conns():
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for line in list(open(name))[1:]:
                v = line.split()
                if v[3] == "01" and int(v[1].rsplit(":", 1)[1], 16) == port:
                    n += 1
        except OSError:
            pass
    return n
end = time.monotonic() + 10
while conns() and time.monotonic() < end:
    time.sleep(0.1)
EOF
}

# dkim_add_milter_cpu RES T0 T1 PIDS: the run's JSON with OpenDKIM's CPU (ticks T0 -> T1)
# added to the relay's, shown on its own (milter_cpu_s); PIDS (comma-separated) are no
# longer "other processes"
dkim_add_milter_cpu() {
    $PY - "$1" "$2" "$3" "$4" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
r, t0, t1, hz = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
pids = {int(p) for p in sys.argv[4].split(",") if p}
m = (t1 - t0) / hz
r["milter_cpu_s"] = m
r["server_cpu_s"] = r.get("server_cpu_s", 0) + m
fp = r.get("foreign_procs") or []
mine = [f for f in fp if f.get("pid") in pids]
if mine:
    r["foreign_procs"] = [f for f in fp if f.get("pid") not in pids]
    r["foreign_cpu_s"] = max(0.0, r.get("foreign_cpu_s", 0) - sum(f["cpu_s"] for f in mine))
print(json.dumps(r))
EOF
}

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
cleanup_extra() {
    stop_sink
    stop_opendkim
    if [ -n "$OD_DIR" ]; then     # OpenDKIM's folder under /run: into the scratch dir if kept
        [ "$KEEP" = 0 ] || cp -a "$OD_DIR" "$TMP/opendkim" 2>/dev/null
        rm -rf "$OD_DIR"
    fi
}

# the postseald and Postfix "up" log lines name the cell's sink
start_log_suffix() { printf ', relayhost [127.0.0.1]:%s' "$SINK_PORT"; }

# ------------------------------------------------------------------ the sink

SINK_PORT=""; SINK_OUT=""
start_sink() {     # $1 = label [$2 = port (default: a free one) [$3 = keep every message in this folder]]
    local dir=$TMP/sink-$1 life dump=()
    mkdir -p "$dir"
    SINK_PORT=${2:-$(freeport)}; SINK_OUT=$dir/counters
    if [ -n "${3:-}" ]; then      # smtp-sink -d: one file per message (it runs as SINK_USER)
        mkdir -p "$3"
        [ -z "${SINK_USER[1]:-}" ] || chown "${SINK_USER[1]}" "$3"
        dump=(-d "$3/%H%M%S.")
    fi
    # bounded: the whole cell (warm-up + reps, each at most idle wait + run + drain) and then some
    life=$(( (REPS + 1) * (IDLE_TIMEOUT + RUN_TIMEOUT + DRAIN_TIMEOUT + 30) + 300 ))
    record "timeout -k 5 $life smtp-sink ${SINK_USER[*]} -c${dump[*]:+ ${dump[*]}} 127.0.0.1:$SINK_PORT 1024 > $SINK_OUT &    # $1"
    timeout -k 5 "$life" smtp-sink "${SINK_USER[@]}" -c ${dump[@]+"${dump[@]}"} "127.0.0.1:$SINK_PORT" 1024 > "$SINK_OUT" 2> "$dir/stderr" &
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
# the one next hop: this cell's sink
relayhost: "[127.0.0.1]:$SINK_PORT"
EOF
    if [ "$TLS" = 1 ]; then
        cat <<EOF
# --tls: STARTTLS offered inbound; outbound TLS required (deferred, never clear)
tls:
  cert_file: $TLS_CERT
  key_file: $TLS_KEY
  outbound: encrypt
EOF
    fi
    if [ "$DKIM" = 1 ]; then
        local k
        cat <<EOF
# --dkim: sign every message from the load tool (127.0.0.1 is in mynetworks, From:
# <$SENDER>) with both keys, made by postseal keygen; inbound verification off (the
# load's mail is unsigned, and OpenDKIM runs in sign-only mode)
dkim:
  keys:
EOF
        for k in "${PS_DKIM_KEYS[@]}"; do printf '    - "%s"\n' "$k"; done
        cat <<EOF
  sign: true
  default_domain: ""
  canonicalization: relaxed/relaxed
  signature_ttl: 0
  timestamp: true
  verify: false
EOF
    fi
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
    if [ "$DKIM" = 1 ]; then
        cat <<EOF
# --dkim: OpenDKIM signs as a milter; mail waits (4xx) rather than leave unsigned
smtpd_milters = $(printf 'inet:127.0.0.1:%s ' "${OD_PORTS[@]}")
non_smtpd_milters = \$smtpd_milters
milter_default_action = tempfail
milter_protocol = 6
EOF
    fi
    [ "$TLS" = 1 ] || return 0
    cat <<EOF
# --tls: STARTTLS offered inbound (session tickets, keys from tlsmgr), outbound TLS
# required (mail waits rather than go in clear), outbound sessions cached for resumption
smtpd_tls_cert_file = $TLS_CERT
smtpd_tls_key_file = $TLS_KEY
smtpd_tls_security_level = may
smtpd_tls_session_cache_database = btree:\$data_directory/smtpd_scache
smtp_tls_security_level = encrypt
smtp_tls_session_cache_database = btree:\$data_directory/smtp_scache
tls_random_source = dev:/dev/urandom
EOF
}

# master.cf: the smtp client, for the relay
PF_MASTER_EXTRA="smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp"
# --tls: tlsmgr keeps the session caches and the ticket keys; tlsproxy is there for
# POSTFIX_EXTRA='smtp_tls_connection_reuse = yes' experiments (unused by default)
if [ "$TLS" = 1 ]; then
    PF_MASTER_EXTRA="$PF_MASTER_EXTRA
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
tlsproxy  unix  -       -       n       -       0       tlsproxy"
fi

postfix_after_start() {
    local i
    # the directories the queue-empty check lists must exist
    for i in $(seq 1 50); do [ -d "$PF_DIR/queue/incoming" ] && [ -d "$PF_DIR/queue/hold" ] && break; sleep 0.1; done
}

# ------------------------------------------------------------------ one load run

# pb_run SERVER SIZE REP N PORT PID MODE QCMD LOG: one run with postseal-bench send and
# a fresh postseal-bench sink on SINK_PORT (benchlib.py pbrelayrun); its JSON on stdout
pb_run() {
    local server=$1 size=$2 rep=$3 n=$4 port=$5 pid=$6 mode=$7 qcmd=$8 log=$9 label life sink send
    label="$server size=$size $( [ "$rep" = 0 ] && echo warm-up || echo "rep=$rep")"
    life=$((RUN_TIMEOUT + 90))
    sink="timeout -k 5 $((life + 10)) $POSTSEAL_BENCH sink --listen 127.0.0.1:$SINK_PORT --threads 1 --duration $life --report $SINK_DIR/sink-$rep.json${SINK_TLS[*]:+ ${SINK_TLS[*]}}"
    if [ "$DKIM" = 1 ] && [ "$rep" = 0 ] && [ "$server" != direct ]; then
        mkdir -p "$SINK_DIR/kept"          # --dkim: the warm-up's messages, to verify
        sink="$sink --write-dir $SINK_DIR/kept"
    fi
    send=(timeout -k 5 "$RUN_TIMEOUT" "$POSTSEAL_BENCH" send --target "127.0.0.1:$port" --connections "$SESSIONS"
          --count "$n" --size "$size" --per-conn "$PER_CONN" --from "$SENDER" --to-domain bench.example
          ${SEND_TLS[@]+"${SEND_TLS[@]}"} --json "$TMP/send-$server-$size-$rep.json")
    record "$sink >> $SINK_DIR/sink.log 2>&1 &    # $label; a fresh sink, probed once"
    record "${send[*]}    # $label; timed until the sink's last 250"
    $LIB pbrelayrun --mode "$mode" --pid "$pid" --sink-cmd "$sink" --sink-port "$SINK_PORT" \
        --sink-report "$SINK_DIR/sink-$rep.json" --sink-log "$SINK_DIR/sink.log" \
        --send-json "$TMP/send-$server-$size-$rep.json" --expect "$n" --queue-cmd "$qcmd" --log "$log" \
        --timeout "$RUN_TIMEOUT" --stall "$STALL" --idle-timeout "$IDLE_TIMEOUT" -- "${send[@]}"
}

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
    log=$TMP/load-$server-$size-$rep.log; : > "$log"
    local milter0=""
    if [ "$server" = postfix ] && [ "${#OD_PIDS[@]}" -gt 0 ]; then
        milter0=$(opendkim_ticks) || milter0=""
    fi
    if [ "$DRIVER" = postseal-bench ]; then
        res=$(pb_run "$server" "$size" "$rep" "$n" "$port" "$pid" "$mode" "$qcmd" "$log") || res=""
    else
        local cmd=(smtp-source -s "$SESSIONS" -m "$n" -l "$size" -f "$SENDER" -t b@bench.example "127.0.0.1:$port")
        record "timeout -k 5 $RUN_TIMEOUT ${cmd[*]}    # $label; timed until the sink has counted $n more"
        res=$($LIB relayrun --mode "$mode" --pid "$pid" --sink-pid "$SINK_PID" --sink-out "$SINK_OUT" \
                --expect "$n" --queue-cmd "$qcmd" --log "$log" --timeout "$RUN_TIMEOUT" --stall "$STALL" \
                --drain-timeout "$DRAIN_TIMEOUT" --idle-timeout "$IDLE_TIMEOUT" \
                -- timeout -k 5 "$RUN_TIMEOUT" "${cmd[@]}") || res=""
    fi
    if [ -z "$res" ] || ! $PY -c 'import json,sys; json.loads(sys.argv[1])["delivered"]' "$res" 2>/dev/null; then
        if [ "$DRIVER" = postseal-bench ]; then
            problem "$label: the measuring helper failed (the sink did not come up, or the relay is gone?); sink log: $(tail -3 "$SINK_DIR/sink.log" 2>/dev/null | tr '\n' ' ' || true)"
        else
            problem "$label: the measuring helper failed (server or sink gone?)"
        fi
        res='{"rc":-1,"wall_s":null,"ingress_s":1,"drain_s":0,"client_cpu_s":0,"server_cpu_s":0,"sink_cpu_s":0,"server_alive":false,"delivered":0,"delivered_at_done":0,"duplicates":0,"queue_before":null,"queue_after":null,"timed_out":false,"stalled":false}'
    fi
    if [ -n "$milter0" ]; then
        local milter1
        if milter1=$(opendkim_ticks); then
            res=$(dkim_add_milter_cpu "$res" "$milter0" "$milter1" "$(IFS=,; echo "${OD_PIDS[*]}")")
        else
            problem "$label: an OpenDKIM instance is gone after the run: $(tail -q -n 2 "${OD_LOGS[@]}" | tr '\n' ' ')"
        fi
    fi
    local probs=()
    local chk
    chk=$($PY - "$res" "$n" "$server" "$RUN_TIMEOUT" "$LOAD_NAME" "$TLS" <<'EOF'
import json, sys
r, n, srv, tmo, tool = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
tls = sys.argv[6] == "1"
p = []
if tls and r.get("send_report_ok") and r.get("sink_report_ok"):
    # every session on both legs ran TLS: the sender's handshakes are its sessions; the
    # sink's are its sessions but the harness's plaintext probe (the relay's connections)
    hs_in = (r.get("in_hs_full") or 0) + (r.get("in_hs_resumed") or 0)
    if hs_in != r.get("send_sessions") or r.get("in_hs_failed"):
        p.append("inbound TLS: %d handshakes (%s failed) for %s sessions" % (hs_in, r.get("in_hs_failed"), r.get("send_sessions")))
    hs_out = (r.get("out_hs_full") or 0) + (r.get("out_hs_resumed") or 0)
    if hs_out != (r.get("sink_sessions") or 0) - 1 or r.get("out_hs_failed"):
        p.append("outbound TLS: the sink saw %d handshakes (%s failed) for %d sessions from the %s" % (
            hs_out, r.get("out_hs_failed"), (r.get("sink_sessions") or 0) - 1, "sender" if srv == "direct" else "relay"))
if r["rc"] != 0:
    p.append("%s exited %s%s" % (tool, r["rc"], " (timed out)" if r["rc"] == 124 else ""))
if r.get("timed_out"):
    p.append("run TIMED OUT after %s s: the sink had %d of %d messages" % (tmo, r["delivered_at_done"], n))
if r.get("stalled"):
    p.append("run STALLED: no delivery for the stall limit; the sink had %d of %d messages (%s finished after %.1f s)" % (r["delivered_at_done"], n, tool, r["ingress_s"]))
if "send_accepted" in r:          # --driver postseal-bench: both tools' reports
    if not r.get("send_report_ok"):
        p.append("no JSON report from postseal-bench send")
    elif r["send_accepted"] != n:
        p.append("the %s answered 250 to %s of %d messages (4xx %s, 5xx %s, no final reply %s)" % (
            "sink" if srv == "direct" else "relay", r["send_accepted"], n, r["send_tempfailed"],
            r["send_permfailed"], r["send_lost"]))
    errs = {k: v for k, v in (r.get("send_errors") or {}).items() if v}
    if errs:
        p.append("postseal-bench send counted errors: " + ", ".join("%s %d" % kv for kv in sorted(errs.items())))
    if not r.get("sink_report_ok"):
        p.append("no JSON report from postseal-bench sink (exit status %s)" % r.get("sink_rc"))
    elif r.get("sink_rc") != 0:
        p.append("postseal-bench sink exited %s" % r.get("sink_rc"))
if r["delivered"] < n:
    p.append("LOST? the sink counted %d of %d messages" % (r["delivered"], n))
elif r["delivered"] > n and "send_accepted" in r:
    p.append("DUPLICATES: the sink counted %d messages for %d sent (%d extra)" % (r["delivered"], n, r["delivered"] - n))
elif r["delivered"] > n:
    p.append("DUPLICATES: the sink counted %d messages for %d sent (%d extra; %d of them after the sink first reached N)" % (
        r["delivered"], n, r["delivered"] - n, r["delivered"] - r["delivered_at_done"]))
if srv != "direct":
    if r.get("queue_before") not in (0, None):
        p.append("the relay's queue was not empty before the run: %s messages" % r["queue_before"])
    if r.get("queue_after") is None:
        p.append("could not list the relay's queue after the run")
    elif r["queue_after"] != 0 and "send_accepted" in r:
        p.append("the relay's queue still had %d messages when the run ended" % r["queue_after"])
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
        probs+=("$LOAD_NAME output: $(grep -v '^$' "$log" | head -3 | tr '\n' ' ' || true)")
    elif [ "$DRIVER" = smtp-source ] && grep -qiE 'fatal|error|warning' "$log"; then
        probs+=("smtp-source complained: $(grep -iE 'fatal|error|warning' "$log" | head -3 | tr '\n' ' ')")
    fi
    case "$server" in
        postseald) kill -0 "$PS_PID" 2>/dev/null || probs+=("postseald DIED during the run; last log lines: $(tail -5 "$PS_LOG" | tr '\n' ' ')") ;;
        postfix) kill -0 "$PF_MASTER" 2>/dev/null || probs+=("Postfix master DIED during the run") ;;
    esac
    if [ "$DRIVER" = smtp-source ]; then
        kill -0 "$SINK_PID" 2>/dev/null || probs+=("smtp-sink DIED during the run")
    fi
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
if r.get("sink_conns_left"):
    out.append("the relay still had %d connection(s) open to the sink 10 s after the run; the sink was stopped under them" % r["sink_conns_left"])
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
r, n, tool = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
w = r.get("wall_s")
lat = ", EOD p50 %s ms p99 %s ms" % (r.get("eod_p50_ms"), r.get("eod_p99_ms")) if "eod_p50_ms" in r else ""
mil = " (OpenDKIM %.2fs of it)" % r["milter_cpu_s"] if "milter_cpu_s" in r else ""
print("%d msgs end to end in %s = %s msg/s (%s %.2fs), relay CPU %.2fs%s, sink +%d, queue after %s%s" % (
    n, "%.2fs" % w if w else "n/a", round(n / w) if w else "n/a", tool, r["ingress_s"], r["server_cpu_s"],
    mil, r["delivered"], r["queue_after"], lat))' "$res" "$n" "$LOAD_NAME")"
    [ "$rep" = 0 ] && return 0
    $PY - "$res" "$server" "$size" "$rep" "$n" "$SESSIONS" "${#probs[@]}" >> "$TMP/runs.jsonl" <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
r.update(server=sys.argv[2], size=int(sys.argv[3]), rep=int(sys.argv[4]), n=int(sys.argv[5]),
         sessions=int(sys.argv[6]), problems_n=int(sys.argv[7]))
print(json.dumps(r))
EOF
}

SINK_DIR=""
bench_path() {   # PATH SIZE
    local server=$1 size=$2 rep warm kept=""
    warm=$((N / 10)); [ "$warm" -gt 1000 ] && warm=1000; [ "$warm" -lt 50 ] && warm=50
    # --dkim: the sink keeps the warm-up's messages (a relay's only), which must verify
    [ "$DKIM" = 1 ] && [ "$server" != direct ] && kept=$TMP/sink-$server-$size/kept
    if [ "$DRIVER" = postseal-bench ]; then
        # every run starts its own sink on this port: below the ephemeral range, so no
        # outgoing connection takes it while no sink listens
        SINK_PORT=$($LIB freeport --low); SINK_DIR=$TMP/sink-$server-$size
        mkdir -p "$SINK_DIR"
    elif [ -n "$kept" ]; then
        # a keeping sink for the warm-up, then a counting one on the same port (below
        # the ephemeral range, so no outgoing connection takes it in between)
        start_sink "$server-$size-warmup" "$($LIB freeport --low)" "$kept" || return 0
    else
        start_sink "$server-$size" || return 0
    fi
    case "$server" in
        postseald) start_postseald "$size" || { stop_sink; return 0; } ;;
        postfix)
            if [ "$DKIM" = 1 ]; then start_opendkim "$size" || { stop_sink; return 0; }; fi
            start_postfix "$size" || { stop_sink; stop_opendkim; return 0; } ;;
    esac
    run_load "$server" "$size" 0 "$warm"
    if [ -n "$kept" ]; then
        if [ "$DRIVER" != postseal-bench ]; then
            dkim_wait_sink_idle "$SINK_PORT"
            stop_sink
            start_sink "$server-$size" "$SINK_PORT" || { stop_postseald; stop_postfix; stop_opendkim; return 0; }
        fi
        dkim_verify_dumps "$server" "$size" "$kept" "$warm"
        rm -rf "$kept"
    fi
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
            stop_opendkim
            rm -rf "$PF_DIR/queue" ;;
    esac
    stop_sink
}

# report_extra (--dkim): the DKIM section of the results file, before its Problems:
# what each relay signed with, CPU per message beside the raw signing cost, the
# signature checks, postseal-bench dkim-speed and openssl speed; the title says DKIM,
# and the plaintext relaying targets (0.2 ms CPU per message) are left out
report_extra() {
    [ "$DKIM" = 1 ] || return 0
    $PY - "$OUT" "$TMP" "$OPENDKIM_DUAL" "$DKIM_DOMAIN" "$SENDER" "$(opendkim -V 2>/dev/null | head -1 | sed 's/.*Filter v//')" \
        "$(openssl version | awk '{print $2}')" "$DO_POSTSEALD" "$DO_POSTFIX" <<'EOF'
import json, os, re, statistics, sys
out, t, dual, domain, sender, odv, osslv = sys.argv[1:8]
do_ps, do_pf = sys.argv[8] == "1", sys.argv[9] == "1"
dual = dual == "1"
runs = [json.loads(l) for l in open(os.path.join(t, "runs.jsonl")) if l.strip()]
meta = json.load(open(os.path.join(t, "meta.json")))

def load(name):
    try:
        return json.load(open(os.path.join(t, name)))
    except (OSError, ValueError):
        return None

speed = load("dkim-speed.json")
ossl = {}
try:
    ossl_text = open(os.path.join(t, "openssl-speed-dkim.txt")).read()
except OSError:
    ossl_text = ""
for line in ossl_text.splitlines():
    v = line.split()
    if line.lstrip().startswith("rsa 2048 bits") and len(v) >= 2:
        ossl["rsa"] = float(v[-2])
    elif "Ed25519" in line and len(v) >= 2:
        ossl["ed"] = float(v[-2])

def med(xs):
    return statistics.median(xs) if xs else None

def rng(xs, nd=3):
    if not xs:
        return "n/a"
    return f"{med(xs):.{nd}f} ({min(xs):.{nd}f}–{max(xs):.{nd}f})"

L = ["## DKIM signing", ""]
L.append(f"Both relays sign every message of the load: its sender and From: are <{sender}>, "
         f"the signing domain is {domain}, and the load tool connects from 127.0.0.1 (a trusted client).")
L.append("")
if do_ps:
    L.append("- **postseald**: `dkim:` in its YAML (below), two keys made by `postseal keygen` "
             "(selectors ps-rsa, RSA-2048, and ps-ed, Ed25519), relaxed/relaxed, t= on, no x=, inbound "
             "verification off: two DKIM-Signature fields per message, signed in the daemon "
             "(crypto/dkim.h over BoringSSL).")
if do_pf:
    L.append(f"- **Postfix + OpenDKIM {odv}**: " + (
             "two private OpenDKIM instances in the foreground chained as Postfix's milters "
             "(`smtpd_milters = inet:127.0.0.1:PORT1 inet:127.0.0.1:PORT2`), one signing with an RSA-2048 key "
             "made by opendkim-genkey (od-rsa), one with an Ed25519 key made by openssl genpkey (od-ed, "
             "SignatureAlgorithm ed25519-sha256): two signatures per message, as postseald makes. OpenDKIM "
             "2.11.0 has one signing algorithm per instance (SignatureAlgorithm; a per-key algorithm in its "
             "KeyTable came later), hence two instances"
             if dual else "a private OpenDKIM in the foreground as Postfix's milter "
             "(`smtpd_milters = inet:127.0.0.1:PORT`), one RSA-2048 key made by opendkim-genkey (selector "
             "od-rsa): one signature per message, where postseald makes two (its Ed25519 signature costs "
             "about 0.03 ms; `--opendkim-dual` adds a second OpenDKIM for Ed25519)") +
             f"; Mode s, relaxed/relaxed, `milter_default_action = tempfail`; OpenDKIM uses OpenSSL {osslv}. "
             "OpenDKIM's CPU is read from its own process(es) around every run and added to Postfix's "
             "(relay CPU below and in the tables above).")
L.append("")

raw_ps = raw_pf = None
if speed:
    raw_ps = 1000.0 / speed["rsa2048_signs_per_s"] + 1000.0 / speed["ed25519_signs_per_s"]
if "rsa" in ossl:
    raw_pf = 1000.0 / ossl["rsa"] + (1000.0 / ossl["ed"] if dual and "ed" in ossl else 0.0)
L.append("| size | relay | signatures per message | msg/s | relay CPU ms/msg | of which OpenDKIM ms/msg "
         "| raw signing ms/msg (one core) | relay CPU beyond raw signing ms/msg |")
L.append("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |")
for size in sorted({r["size"] for r in runs}):
    for srv, name in (("postseald", "postseald"), ("postfix", "Postfix + OpenDKIM")):
        rs = [r for r in runs if r["server"] == srv and r["size"] == size and r.get("wall_s")]
        if not rs:
            continue
        cpu = [r["server_cpu_s"] * 1000.0 / r["n"] for r in rs]
        rate = med([r["n"] / r["wall_s"] for r in rs])
        mil = [r["milter_cpu_s"] * 1000.0 / r["n"] for r in rs if "milter_cpu_s" in r]
        two = srv == "postseald" or dual
        sigs = "rsa-sha256 + ed25519-sha256" if two else "rsa-sha256"
        raw = raw_ps if srv == "postseald" else raw_pf
        src = "BoringSSL, dkim-speed" if srv == "postseald" else f"OpenSSL {osslv}, openssl speed"
        raw_s = f"{raw:.3f} ({src})" if raw is not None else "n/a"
        beyond = f"{med(cpu) - raw:.3f}" if raw is not None else "n/a"
        L.append(f"| {size} B | {name} | {sigs} | {rate:,.0f} | {rng(cpu)} | {rng(mil) if mil else '–'} "
                 f"| {raw_s} | {beyond} |")
L.append("")
L.append("Relay CPU ms/msg: median (min–max) over the repetitions, as in the Results table (Postfix's "
         "includes OpenDKIM's). Raw signing = the signatures alone at the library's one-core rate: "
         "1/RSA-2048 sign rate + 1/Ed25519 sign rate (postseald; for Postfix the same with OpenSSL's rates, "
         "RSA only unless OpenDKIM signs twice). The rest is SMTP, the queue, DKIM canonicalisation and "
         "hashing, and (Postfix) the milter protocol.")
L.append("")

checks = []
for f in sorted(os.listdir(t)):
    m = re.fullmatch(r"dkim-verify-(\w+)-(\d+)\.json", f)
    if not m:
        continue
    r = load(f)
    if r is None:
        continue
    name = "postseald" if m.group(1) == "postseald" else "Postfix + OpenDKIM"
    algs = ", ".join(f"{a} {n}" for a, n in sorted(r["algorithms"].items()))
    verdict = ("every one carries " + " + ".join(r["want"]) + " signatures in " + domain +
               " and every signature verifies") if r["ok"] == r["checked"] and r["checked"] else \
              f"**{r['checked'] - r['ok']} FAILED** (see Problems)"
    checks.append(f"- {name}, {m.group(2)} B: the sink kept {r['files']} of the warm-up's {r['expect']} "
                  f"messages; {r['checked']} checked ({r['signatures']} signatures: {algs}); {verdict}.")
L.append("Signatures checked: the sink kept every message of each relay's warm-up run (smtp-sink -d, "
         "or postseal-bench sink --write-dir; the measured runs keep nothing), and python3-dkim "
         f"{meta.get('python_dkim', '')} verified each (up to 1000) against the records the key tools printed "
         "(`postseal keygen`, opendkim-genkey), handed in as its DNS.")
L.append("")
L.extend(checks or ["- none checked"])
L.append("")

L.append("### Raw signing speed, one core")
L.append("")
if speed:
    runs_s = "; ".join(f"{x['dual_messages_per_s']:,.0f}" for x in speed.get("runs", []))
    L.append(f"`postseal-bench dkim-speed --seconds {speed['seconds']:g}` (BoringSSL and crypto/dkim.h; "
             f"{len(speed.get('runs', []))} run(s), the one with the fastest dual rate shown; dual msg/s of "
             f"every run: {runs_s}):")
    L.append("")
    L.append("| operation | rate | time each |")
    L.append("| --- | ---: | ---: |")
    a, e, d = speed["rsa2048_sign"], speed["ed25519_sign"], speed["dkim_dual"]
    L.append(f"| RSA-2048 sign (RSA_sign of a SHA-256 digest) | {a['per_cpu_s']:,.0f}/s | {a['us_each'] / 1000:.3f} ms |")
    L.append(f"| Ed25519 sign (ED25519_sign of 32 bytes) | {e['per_cpu_s']:,.0f}/s | {e['us_each'] / 1000:.3f} ms |")
    L.append(f"| dkim_sign_begin + dkim_sign_end, {speed['message_bytes']} B message, RSA-2048 + Ed25519, "
             f"relaxed/relaxed | {d['per_cpu_s']:,.0f} msg/s | {d['us_each'] / 1000:.3f} ms (hash pass "
             f"{speed['dkim_dual_begin_us']:.1f} µs, sign pass {speed['dkim_dual_end_us']:.1f} µs) |")
    L.append(f"| DKIM overhead beyond the two signatures (1/dual − 1/RSA − 1/Ed25519) | | "
             f"{speed['overhead_ms_per_msg']:.4f} ms |")
    L.append("")
elif do_ps:
    L.append("postseal-bench dkim-speed: no result (see Problems).")
    L.append("")
if ossl_text:
    L.append(f"`openssl speed -seconds 3 rsa2048 ed25519` (OpenSSL {osslv}, the library of Postfix and OpenDKIM):")
    L.append("")
    L.append("```")
    L.append(ossl_text.rstrip())
    L.append("```")
    L.append("")
else:
    L.append("openssl speed: not run (smoke run)." if meta.get("smoke") else "openssl speed: no output.")
    L.append("")
for f in sorted(os.listdir(t)):
    if re.fullmatch(r"opendkim-\d+\.conf", f):
        L.append(f"OpenDKIM configuration, instance {f[9:-5]} (private, last cell):")
        L.append("")
        L.append("```")
        L.append(open(os.path.join(t, f)).read().rstrip())
        L.append("```")
        L.append("")

text = open(out).read().split("\n")
if len(text) > 2 and text[2].startswith("Generated by `bench/relay.sh"):
    text[2] = text[2].replace("Generated by `bench/relay.sh", "Generated by `bench/relay.sh --dkim", 1)
if text and text[0].startswith("# SMTP relay end to end: "):
    pf = "Postfix " + meta.get("postfix_version", "") + f" + OpenDKIM {odv}"
    text[0] = "# DKIM-signing relay: " + ("postseald vs " + pf if do_ps and do_pf else pf + " (postseald not run)"
                                        if do_pf else "postseald (Postfix not run)") + " — " + meta["date"]
for j, l in enumerate(text):     # the targets are for relaying without DKIM
    if l.startswith("Delivery-issue targets for postseald"):
        del text[j:j + 2]
        break
try:
    i = text.index("## Problems")
except ValueError:
    i = len(text)
text[i:i] = L
open(out, "w").write("\n".join(text))
EOF
}

# ------------------------------------------------------------------ machine info

BUILD_INFO="not run"
if [ "$DO_POSTSEALD" = 1 ]; then postseald_build_info; fi
bench_prelude
if [ "$DRIVER" = postseal-bench ]; then
    log "driver postseal-bench: $POSTSEAL_BENCH send --per-conn $PER_CONN, a fresh sink per run"
    record "# postseal-bench: $POSTSEAL_BENCH"
fi
if [ "$TLS" = 1 ]; then
    log "TLS on both legs: send ${SEND_TLS[*]}; sink ${SINK_TLS[*]}"
    tls_raw
fi
if [ "$DKIM" = 1 ]; then
    make_dkim_keys
    log "DKIM: signing domain $DKIM_DOMAIN (the load's From: <$SENDER>); keys and records in $DKIM_DIR"
    dkim_raw
fi

# ------------------------------------------------------------------ the runs

for size in $SIZES; do
    if [ "$DO_DIRECT" = 1 ]; then bench_path direct "$size"; fi
    if [ "$DO_POSTSEALD" = 1 ]; then bench_path postseald "$size"; fi
    if [ "$DO_POSTFIX" = 1 ]; then bench_path postfix "$size"; fi
done

# ------------------------------------------------------------------ report

note "Everything ran on the same $(nproc)-core machine: $LOAD_NAME, the relay and $SINK_NAME compete for CPU, so msg/s is a whole-system figure; the load tool's and the sink's CPU are reported separately."
if [ "$DRIVER" = postseal-bench ]; then
    note "Each cell (path × size): a fresh relay with an empty spool/queue pointed at the cell's sink port, one unrecorded warm-up run (N/10, at most 1000 messages), then the repetitions back to back; before each run the relay's queue is empty (checked)."
    note "Sink: postseal-bench sink --threads 1 (io_uring, answers 250 to everything, PIPELINING, no disk), a fresh one for every run (warm-up included) on the cell's port (below the ephemeral range). Its first session is the harness's probe; its report's active_s (first session → last 250, CLOCK_MONOTONIC) places the run's end to within a fraction of a millisecond (the probe's connect → greeting interval; anchor_err_ms in the run records). After a run the harness waits up to 10 s for the relay to close its connections to the sink (postseald: 1 s idle; Postfix: connection cache, 2 s), then stops the sink and reads its report."
    note "Load: postseal-bench send, one io_uring thread, closed loop (each session starts its next message when the last one is answered), --per-conn $PER_CONN, no PIPELINING; the message is the --size body plus about 190 octets of header (Message-ID, Date, From, To, Subject), so a little larger than smtp-source's for the same SIZE."
else
    note "Each cell (path × size): a fresh smtp-sink, a fresh relay with an empty spool/queue pointed at that sink, one unrecorded warm-up run (N/10, at most 1000 messages), then the repetitions back to back; before each run the relay's queue is empty (checked)."
    note "Sink: Postfix smtp-sink -c (single process, answers 250 to everything, PIPELINING, no disk); its counter (sess/quit/mesg, updated at every '.') is read every 5 ms, so a run's end is known to ±5 ms."
fi
note "postseald: threads: $PS_THREADS (of $(nproc) cores: the load tool and the sink run beside it), durable spool (250 after group-committed fdatasync), relayhost [127.0.0.1]:SINKPORT, delivery defaults (concurrency 10 connections per thread = $((10 * PS_THREADS)), 100 messages per connection), a message leaves the spool once its DONE records are durable; logging to a file (connect/disconnect and one delivered line per recipient)."
note "Postfix: private instance (own config and queue directory), no chroot, default durability (cleanup fsyncs the queue file before smtpd answers 250), default_process_limit = $PF_PROCESS_LIMIT, relayhost = [127.0.0.1]:SINKPORT and nothing else (mydestination, relay_domains, transport maps, fallback relay all empty; local/virtual transports are error:), soft_bounce = yes and notify_classes empty so it never generates mail; destination concurrency and connection caching at their defaults (default_destination_concurrency_limit 20, smtp_connection_cache_on_demand), in_flow_delay at its default (1 s). The maillog is checked afterwards: every status=sent went to the sink."
note "Relay CPU: postseald = its process utime+stime; Postfix = master + every live descendant (smtpd, cleanup, qmgr, smtp, trivial-rewrite, scache, anvil, postlogd, ...) + master's cutime/cstime for reaped children; measured from just before $LOAD_NAME starts until the queue has drained plus 1 s (so the work of removing delivered messages is included). /proc clock ticks (1/$(getconf CLK_TCK) s); kernel work not charged to a process is not counted for either relay."
note "Before every run the script waits (up to $IDLE_TIMEOUT s) until the whole machine is below 10% busy over 1 s; CPU used by other processes during a run is shown per run and flagged under Warnings."
if [ "$TLS" = 1 ]; then
    if [[ "${POSTFIX_EXTRA:-}" == *smtp_tls_connection_reuse* ]]; then
        PF_TLS_REUSE_NOTE="smtp_tls_connection_reuse set by POSTFIX_EXTRA (see main.cf below; with yes, Postfix's smtp client hands its TLS to tlsproxy and caches the connection, so deliveries share connections)"
    else
        PF_TLS_REUSE_NOTE="smtp_tls_connection_reuse at its default (no: Postfix does not cache TLS connections, so it opens one connection per delivery, while postseald keeps its connections to the sink and sends up to 100 messages on each)"
    fi
    note "TLS (--tls): both legs STARTTLS (RFC 3207) with the same self-signed EC P-256 certificate (openssl req, above) on every server; TLS 1.2 and 1.3 allowed everywhere, so each pair negotiated its best (the version is in the per-run table). Inbound: postseal-bench send ${SEND_TLS[*]} (STARTTLS after EHLO, EHLO again inside; $( [ "$TLS_RESUME" = 1 ] && echo "one session cache for the whole run keyed by the target, so every connection but each slot's first offers a session to resume" || echo "no resumption: every handshake full")). Outbound: postseal-bench sink --tls-cert/--tls-key offers STARTTLS (BoringSSL through crypto/tls.h, session tickets); postseald tls.outbound: encrypt (its per-destination session cache resumes); Postfix smtp_tls_security_level = encrypt with smtp_tls_session_cache_database = btree (tlsmgr), smtpd_tls_security_level = may, $PF_TLS_REUSE_NOTE. Neither relay checks the sink's certificate (encrypt, not verify)."
    note "Every run checks that every session on both legs ran TLS: the sender's handshakes equal its sessions, and the sink's handshakes equal its sessions minus the harness's plaintext probe. Handshake counts come from the tools at either end (the sender's and the sink's reports), the same for both relays."
    note "Raw figure: postseal-bench tls-handshake runs a client and a server adapter of crypto/tls.h against each other in memory on one thread (no sockets, no SMTP), with the run's certificate, ${RAW_REPS} runs of ${RAW_SECONDS} s each of full and of resumed handshakes, interleaved, the fastest of each kind shown (on a shared machine noise only slows a run); every call's time (CLOCK_MONOTONIC around it) is charged to its side, so 'server side' is what one inbound handshake costs a relay's core and 'client side' what one outbound handshake costs. Postfix uses OpenSSL $(openssl version | awk '{print $2}'), not BoringSSL: its raw cost differs; openssl speed of the same primitives (ECDSA P-256 sign, X25519) is shown for context."
    note "Handshake CPU estimate = (inbound full × server-side full µs + inbound resumed × server-side resumed µs + outbound full × client-side full µs + outbound resumed × client-side resumed µs) / N: what the relay's handshakes alone would cost at BoringSSL's in-memory rate (for Postfix only a yardstick: OpenSSL's cost is its own). The rest of the relay's CPU is SMTP, the queue, record encryption and the kernel."
fi
if [ "$DKIM" = 1 ]; then
    note "DKIM (--dkim): postseald signs with two keys made by postseal keygen (RSA-2048 and Ed25519, dkim: in its YAML below); Postfix hands every message to a private OpenDKIM $(opendkim -V 2>/dev/null | head -1 | sed 's/.*Filter v//') (milter, inet on 127.0.0.1, Mode s) that signs with $( [ "$OPENDKIM_DUAL" = 1 ] && echo "an RSA-2048 key, then to a second one that signs with an Ed25519 key (--opendkim-dual)" || echo "one RSA-2048 key"). The load's sender and From: are <$SENDER>, so every message is in the signing domain $DKIM_DOMAIN. Postfix's relay CPU includes OpenDKIM's (every thread of every instance), read before and after every run."
    note "Signature check (--dkim): in each relay cell the sink keeps the warm-up run's messages ($( [ "$DRIVER" = postseal-bench ] && echo "postseal-bench sink --write-dir" || echo "a separate smtp-sink -d for the warm-up, then a fresh counting smtp-sink on the same port for the measured runs, started once the relay has closed its connections")); python3-dkim verifies them against the published records. The measured runs' sink keeps nothing."
fi
note "The direct rate is the ceiling of this load generator + sink pair on this machine ($LOAD_NAME and $SINK_NAME alone), not of the network path; a relay does at least twice the SMTP work per message on the same cores, so 50% of direct is not a bad figure on a 2-core machine."

write_meta <<EOF
    "postseald_tree": (lambda st: ("not clean, the binary may include uncommitted or untracked sources: " + ", ".join(l[3:] for l in st[:12]) + (" ..." if len(st) > 12 else "")) if st else "clean")(
        [l for l in subprocess.run("git -C '$REPO' status --porcelain -- . ':(exclude)bench'", shell=True, capture_output=True, text=True, timeout=10).stdout.splitlines() if l.strip()]),
    "postseald_binary": "$POSTSEALD ($BUILD_INFO)",
    "postfix_version": pfv if $DO_POSTFIX == 1 else "not run",
    "smtp_source": ("postseal-bench send and sink ($POSTSEAL_BENCH)" if "$DRIVER" == "postseal-bench"
                    else "smtp-source and smtp-sink (Postfix " + pfv + ")"),
    "driver": "$DRIVER",
    "per_conn": ${PER_CONN:-1},
    "tls": $TLS == 1,
    "tls_resume": $TLS_RESUME == 1,
    "dkim": $DKIM == 1,
    "dkim_domain": "$DKIM_DOMAIN",
    "opendkim_dual": $OPENDKIM_DUAL == 1,
    "opendkim_version": sh("opendkim -V 2>/dev/null | head -1") if $DKIM == 1 and $DO_POSTFIX == 1 else "not run",
    "python_dkim": sh("dpkg-query -W -f '\${Version}' python3-dkim 2>/dev/null") if $DKIM == 1 else "",
    "tls_raw": json.load(open(os.path.join(t, "tls-raw.json"))) if os.path.exists(os.path.join(t, "tls-raw.json")) else {},
    "openssl_speed": open(os.path.join(t, "openssl-speed.txt")).read() if os.path.exists(os.path.join(t, "openssl-speed.txt")) else "",
    "openssl_version": sh("openssl version"),
    "python": platform.python_version(),
    "sessions": $SESSIONS,
    "postseald_threads": $PS_THREADS,
    "reps": $REPS,
    "target_pct": $TARGET_PCT,
    "target_cpu_ms": $TARGET_CPU_MS,
EOF
finish relayreport
