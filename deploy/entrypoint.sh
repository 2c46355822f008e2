#!/bin/sh
# deploy/entrypoint.sh — the container's entrypoint (deploy/Containerfile).
#
# Writes postseald's YAML configuration from the environment, makes DKIM
# keys on first start when asked, and then execs postseald, which becomes
# PID 1: SIGTERM reaches it directly and drains (docs/deploy.md).
#
#   (no arguments), postseald [ARGS]  configure, then run postseald
#   check-config                      configure, print the YAML, then
#                                     postseald --check-config
#   healthcheck                       GET /metrics; exit 0 on 200
#   any other command                 run as is (postseal queue list, sh)
#
# Variables: the POSTSEAL_* ones postseald reads itself (they override the
# file written here), and the names of the boky/postfix image as aliases.
# VAR_FILE reads VAR from a file (secrets). The table is in docs/deploy.md.
set -eu

STATE_DIR=/var/lib/postseal          # the volume
DKIM_DIR=$STATE_DIR/dkim
CONFIG=${TMPDIR:-/tmp}/postseald.yaml # the root file system may be read-only
SMTP_LISTEN_DEFAULT=0.0.0.0:2525
SUBMISSION_LISTEN_DEFAULT=0.0.0.0:2587
METRICS_LISTEN_DEFAULT=0.0.0.0:9425

# Variables that may come from a file instead: NAME_FILE=/path. Those
# whose own name ends in _FILE (POSTSEAL_TLS_CERT_FILE, ...) are paths
# already and are not in the list.
FILE_VARS="RELAYHOST RELAYHOST_USERNAME RELAYHOST_PASSWORD
ALLOWED_SENDER_DOMAINS MYNETWORKS DKIM_SELECTOR DKIM_AUTOGENERATE LOG_FORMAT
POSTSEAL_HOSTNAME POSTSEAL_THREADS POSTSEAL_SMTP_LISTEN
POSTSEAL_SUBMISSION_LISTEN POSTSEAL_SUBMISSIONS_LISTEN POSTSEAL_METRICS_LISTEN
POSTSEAL_SPOOL_DIR POSTSEAL_RELAYHOST POSTSEAL_LOG_FORMAT POSTSEAL_MYNETWORKS
POSTSEAL_LOCAL_DOMAINS POSTSEAL_RELAY_DOMAINS POSTSEAL_TRANSPORTS
POSTSEAL_LOCAL_TRANSPORT POSTSEAL_DNS_SERVERS POSTSEAL_CONTROL_SOCKET
POSTSEAL_TLS_OUTBOUND POSTSEAL_TLS_POLICIES POSTSEAL_DKIM_KEYS
POSTSEAL_SMIME_SIGN"

# log LEVEL MESSAGE: one line on stderr, in the daemon's log format.
log() {
  if [ "$(log_format)" = json ]; then
    esc=$(printf '%s' "$2" | sed 's/\\/\\\\/g; s/"/\\"/g; s/	/\\t/g')
    printf '{"level":"%s","event":"entrypoint","msg":"%s"}\n' "$1" "$esc" >&2
  else
    printf 'level=%s event=entrypoint msg="%s"\n' "$1" \
      "$(printf '%s' "$2" | sed 's/"/\\"/g')" >&2
  fi
}

die() {
  log error "$1"
  exit 1
}

log_format() {
  printf '%s' "${POSTSEAL_LOG_FORMAT:-${LOG_FORMAT:-plain}}"
}

# load_file_vars sets NAME from the file named by NAME_FILE.
load_file_vars() {
  for name in $FILE_VARS; do
    eval "file=\${${name}_FILE:-}"
    [ -n "$file" ] || continue
    eval "isset=\${${name}+set}"
    [ -z "$isset" ] || die "$name and ${name}_FILE are both set; set one"
    [ -r "$file" ] || die "${name}_FILE: cannot read $file"
    # $(...) drops trailing newlines, as a secret file usually has one.
    # shellcheck disable=SC2034 # read by the eval below
    value=$(cat "$file")
    eval "$name=\$value"
    export "${name?}"
  done
}

# yaml_str prints its argument as a YAML double-quoted scalar.
yaml_str() {
  case $1 in
  *[[:cntrl:]]*) die "a value holds a control character: $(printf '%s' "$1" | tr -d '[:cntrl:]')" ;;
  esac
  printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# truthy NAME VALUE: 0 for true/yes/1/on, 1 for false/no/0/off/empty.
truthy() {
  case $(printf '%s' "$2" | tr '[:upper:]' '[:lower:]') in
  1 | true | yes | on) return 0 ;;
  0 | false | no | off | '') return 1 ;;
  *) die "$1=\"$2\" is not true or false" ;;
  esac
}

# words prints a comma- or blank-separated list one entry a line.
words() {
  printf '%s\n' "$1" | tr -s ', \t' '\n' | sed '/^$/d'
}

# check_unsupported refuses what postseald cannot do yet, rather than
# relaying without it: it has no SMTP AUTH client towards a relayhost.
check_unsupported() {
  if [ -n "${RELAYHOST_USERNAME:-}" ] || [ -n "${RELAYHOST_PASSWORD:-}" ]; then
    die "RELAYHOST_USERNAME/RELAYHOST_PASSWORD: postseald cannot authenticate to a relayhost (no SMTP AUTH client yet); use a relayhost that accepts this relay by address, or unset them"
  fi
}

# write_mynetworks: MYNETWORKS in Postfix syntax (blanks or commas,
# [v6]/n, bare addresses) as a YAML list of a.b.c.d/n and x::y/n.
write_mynetworks() {
  echo "# from MYNETWORKS"
  echo "mynetworks:"
  words "$MYNETWORKS" | while IFS= read -r net; do
    net=$(printf '%s' "$net" | tr -d '[]')
    case $net in
    */*) ;;
    *:*) net=$net/128 ;;
    *) net=$net/32 ;;
    esac
    echo "  - $(yaml_str "$net")"
  done
}

# dkim_keys prints one dkim.keys entry per domain of ALLOWED_SENDER_DOMAINS
# whose key is in the volume, making missing keys with DKIM_AUTOGENERATE.
dkim_keys() {
  selector=${DKIM_SELECTOR:-mail}
  auto=0
  if truthy DKIM_AUTOGENERATE "${DKIM_AUTOGENERATE:-}"; then auto=1; fi
  words "${ALLOWED_SENDER_DOMAINS:-}" | while IFS= read -r domain; do
    domain=$(printf '%s' "$domain" | tr '[:upper:]' '[:lower:]')
    domain=${domain%.}
    key=$DKIM_DIR/$domain.$selector.key
    txt=$DKIM_DIR/$domain.$selector.txt
    if [ ! -f "$key" ]; then
      if [ "$auto" = 0 ]; then
        log warning "no DKIM key $key: mail from $domain is not signed (DKIM_AUTOGENERATE=true makes one)"
        continue
      fi
      mkdir -p "$DKIM_DIR"
      postseal keygen --domain "$domain" --selector "$selector" \
        --dir "$DKIM_DIR" >"$txt.new" 2>"$txt.err" ||
        die "postseal keygen for $domain failed: $(cat "$txt.err")"
      mv "$txt.new" "$txt"
      rm -f "$txt.err"
      log info "made DKIM key $key"
    fi
    if [ -f "$txt" ]; then
      log info "DKIM: publish this TXT record for $domain: $(tr '\n' ' ' <"$txt")"
    fi
    echo "    - $(yaml_str "$domain $selector $key")"
  done
}

# write_config writes the YAML: container defaults, then what the aliases
# say. POSTSEAL_* variables are not copied: postseald applies them over
# this file itself.
write_config() {
  mkdir -p "$STATE_DIR/spool" "$STATE_DIR/mail"
  keys=$(dkim_keys) || exit 1
  {
    echo "# Written by $0 at start; edits are lost."
    echo "listen:"
    echo "  smtp: $SMTP_LISTEN_DEFAULT"
    echo "  submission: $SUBMISSION_LISTEN_DEFAULT"
    echo "  metrics: $METRICS_LISTEN_DEFAULT"
    echo "spool_dir: $STATE_DIR/spool"
    echo "local_transport: \"maildir:$STATE_DIR/mail/%d/%u\""
    if [ -n "${RELAYHOST:-}" ]; then
      echo "# from RELAYHOST"
      echo "relayhost: $(yaml_str "$RELAYHOST")"
    fi
    if [ -n "${LOG_FORMAT:-}" ]; then
      echo "# from LOG_FORMAT"
      echo "log_format: $(yaml_str "$LOG_FORMAT")"
    fi
    if [ -n "${MYNETWORKS:-}" ]; then
      write_mynetworks
    fi
    if [ -n "$keys" ]; then
      echo "# from ALLOWED_SENDER_DOMAINS and DKIM_SELECTOR; keys in $DKIM_DIR"
      echo "dkim:"
      echo "  keys:"
      printf '%s\n' "$keys"
    fi
  } >"$CONFIG.new"
  mv "$CONFIG.new" "$CONFIG"
}

# notes logs what the configuration does not do that a user may expect.
notes() {
  if [ -z "${MYNETWORKS:-}" ] && [ -z "${POSTSEAL_MYNETWORKS+set}" ]; then
    log info "mynetworks is loopback only: no client may relay until MYNETWORKS is set"
  fi
  if [ -n "${ALLOWED_SENDER_DOMAINS:-}" ]; then
    log info "ALLOWED_SENDER_DOMAINS names the DKIM signing domains; postseald does not restrict senders to them (relaying is by MYNETWORKS)"
  fi
}

configure() {
  load_file_vars
  check_unsupported
  write_config
  notes
}

# healthcheck: GET /metrics on the metrics listener (bash's /dev/tcp; the
# image has no HTTP client). Without a metrics listener, PID 1 alive.
healthcheck() {
  listen=${POSTSEAL_METRICS_LISTEN-$METRICS_LISTEN_DEFAULT}
  if [ -z "$listen" ]; then
    kill -0 1
    return
  fi
  port=${listen##*:}
  host=${listen%:*}
  host=$(printf '%s' "$host" | tr -d '[]')
  case $host in
  '' | 0.0.0.0) host=127.0.0.1 ;;
  ::) host=::1 ;;
  esac
  # shellcheck disable=SC2016 # expanded by bash, from its arguments
  timeout 5 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
    printf "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n" "$1" >&3
    IFS= read -r status <&3 || exit 1
    case $status in "HTTP/1."?" 200"*) exit 0 ;; esac
    exit 1' healthcheck "$host" "$port"
}

case ${1:-postseald} in
postseald)
  [ $# -eq 0 ] || shift
  configure
  exec postseald -c "$CONFIG" "$@"
  ;;
-*)
  configure
  exec postseald -c "$CONFIG" "$@"
  ;;
check-config)
  configure
  cat "$CONFIG"
  exec postseald -c "$CONFIG" --check-config
  ;;
healthcheck)
  healthcheck
  ;;
*)
  exec "$@"
  ;;
esac
