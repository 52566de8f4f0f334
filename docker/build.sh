#!/usr/bin/env bash
# Build the step images under the names and tags in bertops/images.py (tagged by git commit;
# BERTOPS_CPU_IMAGE / BERTOPS_CUDA_IMAGE / BERTOPS_IMAGE_TAG override them, as when compiling).
#   docker/build.sh            the CPU image (what `make images` runs)
#   docker/build.sh cuda       the CUDA image (needs its base from a registry: nvidia/cuda)
#   docker/build.sh all --push both, then push them
# The CPU build needs no network: a container engine is started if none answers (as root), the
# base image is pulled if a registry answers or made with debootstrap if not (BASE_IMAGE=...
# picks one), and the wheels come from docker/wheelhouse, filled with this machine's pip.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
which="${1:-cpu}"
push="${2:-}"
cli="$(docker/engine.sh)"
image_for() { "$python" -m bertops.images | awk -v f="docker/$1.Dockerfile" '$2 == f {print $1}'; }
names=(--build-arg "BERTOPS_CPU_IMAGE=$(image_for cpu)" --build-arg "BERTOPS_CUDA_IMAGE=$(image_for cuda)")

build_cpu() {
  local image base official
  image="$(image_for cpu)"
  official="$(sed -n 's/^ARG BASE_IMAGE=//p' docker/cpu.Dockerfile)"
  base="${BASE_IMAGE:-}"
  if [[ -z "$base" ]]; then
    if "$cli" image inspect "$official" >/dev/null 2>&1 || timeout 120 "$cli" pull "$official" >/dev/null 2>&1; then
      base="$official"
    else
      echo "cannot pull $official (no registry reachable): making a local base image" >&2
      base="$(docker/base-image.sh "$cli")"
    fi
  fi
  docker/wheelhouse.sh "$python"
  echo "building $image on $base" >&2
  DOCKER_BUILDKIT=1 "$cli" build --network host --build-arg "BASE_IMAGE=$base" "${names[@]}" \
    --file docker/cpu.Dockerfile --tag "$image" .
}

build_cuda() {
  DOCKER_BUILDKIT=1 "$cli" build --network host "${names[@]}" --file docker/cuda.Dockerfile --tag "$(image_for cuda)" .
}

case "$which" in
  cpu) build_cpu ;;
  cuda) build_cuda ;;
  all) build_cpu; build_cuda ;;
  *) echo "usage: docker/build.sh [cpu|cuda|all] [--push]" >&2; exit 2 ;;
esac
if [[ "$push" == "--push" ]]; then
  for kind in cpu cuda; do
    if [[ "$which" == all || "$which" == "$kind" ]]; then "$cli" push "$(image_for "$kind")"; fi
  done
fi
