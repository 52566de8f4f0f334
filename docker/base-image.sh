#!/usr/bin/env bash
# A local base image for machines that reach no image registry: Debian bookworm with its
# python3 (3.11), made by debootstrap from the apt mirror this machine already uses, imported
# into the engine as bertops-base:bookworm-py3.11 (about 2 minutes, 145 MB compressed).
# Usage: docker/base-image.sh DOCKER_CLI [NAME]
set -euo pipefail
cli="$1"
name="${2:-bertops-base:bookworm-py3.11}"
if "$cli" image inspect "$name" >/dev/null 2>&1; then echo "$name"; exit 0; fi
if ! command -v debootstrap >/dev/null 2>&1; then
  [[ "$(id -u)" == 0 ]] || { echo "debootstrap is missing: apt-get install debootstrap (as root)" >&2; exit 3; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi
# The mirror apt already uses (deb822 sources or the classic list).
mirror="$(grep -hoE '^URIs: *http[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')"
[[ -n "$mirror" ]] || mirror="$(grep -hoE '^deb +http[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $2}')"
mirror="${mirror:-http://deb.debian.org/debian}"
rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
echo "building $name with debootstrap from $mirror" >&2
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
  bookworm "$rootfs" "$mirror" >&2
tar -C "$rootfs" -c . | "$cli" import - "$name" >&2
echo "$name"
