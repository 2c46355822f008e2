#!/usr/bin/env bash
# Installs every Debian package postseal's build and tests need.
# Idempotent: safe to run again; apt-get skips what is already installed.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

export DEBIAN_FRONTEND=noninteractive

# Postfix asks questions at install time; it is only a test peer here
# (smtp-source, smtp-sink, the comparison relay), so no configuration.
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections

# nsd, unbound and dovecot are test peers too, started by the tests on
# loopback ports: the packages' own services must not start at install
# time (they would take port 53 and the mail ports). policy-rc.d tells
# invoke-rc.d so;
# one we add is removed again.
ADDED_POLICY=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod 755 /usr/sbin/policy-rc.d
  ADDED_POLICY=1
fi
trap '[ -z "$ADDED_POLICY" ] || $SUDO rm -f /usr/sbin/policy-rc.d' EXIT

$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends \
  build-essential cmake pkg-config clang libclang-rt-14-dev clang-format \
  liburing-dev android-libboringssl-dev libc-ares-dev libjemalloc-dev \
  libxxhash-dev libyaml-dev libcmocka-dev zlib1g-dev libcrypt-dev \
  python3 postfix swaks libnet-ssleay-perl libio-socket-ssl-perl prometheus \
  whois testssl.sh python3-dkim python3-nacl opendkim opendkim-tools \
  python3-spf publicsuffix libxml2-utils dbconfig-no-thanks opendmarc \
  postfix-policyd-spf-python \
  nsd unbound ldnsutils dovecot-core dovecot-lmtpd gnuplot-nox \
  util-linux procps iproute2 yamllint shellcheck gpgsm gpg-agent \
  redis-server

# kubectl renders deploy/k8s (tests/integration/test_k8s_manifests.py).
# The Kubernetes project's `kubectl` package where its repository is set
# up (as on the project's machines), else Debian's kubernetes-client.
if ! command -v kubectl >/dev/null; then
  if apt-cache policy kubectl | grep -q 'Candidate: [0-9]'; then
    $SUDO apt-get install -y -q --no-install-recommends kubectl
  else
    $SUDO apt-get install -y -q --no-install-recommends kubernetes-client
  fi
fi
