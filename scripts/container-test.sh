#!/usr/bin/env bash
# Installs podman, buildah, runc and debootstrap, then runs the container
# test (tests/integration/test_container.py): it makes a Debian base image
# with debootstrap if none is there (kept in podman's image store), builds
# deploy/Containerfile, and runs the image. Not part of scripts/setup.sh,
# which CI runs: the first base image and build take several minutes.
#   POSTSEAL_CONTAINER_BASE=debian:bookworm-slim  where a registry is reachable
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

$SUDO apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
  --no-install-recommends podman buildah runc debootstrap uidmap

# Rootful podman: the test runs as root.
exec $SUDO env ${POSTSEAL_CONTAINER_BASE:+POSTSEAL_CONTAINER_BASE="$POSTSEAL_CONTAINER_BASE"} \
  /usr/bin/python3 tests/integration/test_container.py
