#!/usr/bin/env bash
# Build the step images under the names and tags in bertops/images.py (set BERTOPS_CPU_IMAGE /
# BERTOPS_CUDA_IMAGE for a private registry, as when compiling). `docker/build.sh --push` pushes them.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
"$python" -m bertops.images | while read -r image dockerfile; do
  docker build --file "$dockerfile" --tag "$image" .
  if [[ "${1:-}" == "--push" ]]; then
    docker push "$image"
  fi
done
