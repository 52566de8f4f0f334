#!/usr/bin/env bash
# Make sure a container engine answers. As root on a machine without one, install Debian's
# docker.io and start dockerd the way these machines allow (no iptables, no bridge: containers
# use the host network). Prints the docker CLI to use; exits 3 with a one-line notice otherwise.
set -euo pipefail
# Debian's 20.10 CLI has BuildKit built in and honours <Dockerfile>.dockerignore.
docker_cli() {
  if [[ -x /usr/bin/docker ]]; then echo /usr/bin/docker; else command -v docker || true; fi
}
cli="$(docker_cli)"
if [[ -n "$cli" ]] && "$cli" info >/dev/null 2>&1; then
  echo "$cli"; exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "no container engine answers and this is not root: start dockerd (or Docker Desktop) and retry" >&2
  exit 3
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "installing Debian's docker.io (container engine)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >&2
fi
log="${TMPDIR:-/tmp}/bertops-dockerd.log"
echo "starting dockerd (log: $log)" >&2
nohup dockerd --iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2 >"$log" 2>&1 &
cli="$(docker_cli)"
for _ in $(seq 1 60); do
  if "$cli" info >/dev/null 2>&1; then echo "$cli"; exit 0; fi
  sleep 1
done
echo "dockerd did not answer within 60 s: see $log" >&2
exit 3
