#!/usr/bin/env bash
# Fill docker/wheelhouse with every wheel the CPU image installs, using this machine's own pip
# configuration (its indexes, proxies, the CPU torch wheel): the image build then needs no
# network at all (`pip install --no-index`), as in an air-gapped cluster. The versions are those
# of the tested virtual environment (its `pip freeze` is the constraint file).
# Usage: docker/wheelhouse.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
out=docker/wheelhouse
data_packages="$(sed -n 's/^DATA_PACKAGES := //p' Makefile)"
torch_spec="$(sed -n "s/^TORCH_SPEC ?= //p" Makefile)"
mkdir -p "$out"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$python" -m pip freeze --exclude-editable | grep -v '^-e ' | grep -v ' @ ' >"$constraints"
rm -f "$out"/bertops-*.whl
"$python" -m pip wheel --quiet --wheel-dir "$out" --constraint "$constraints" "$torch_spec" ".[cpu]" setuptools wheel
# shellcheck disable=SC2086 # one word per package
"$python" -m pip wheel --quiet --wheel-dir "$out" --no-deps $data_packages
echo "$out: $(find "$out" -name '*.whl' | wc -l) wheels, $(du -sh "$out" | cut -f1)"
