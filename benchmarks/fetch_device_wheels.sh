#!/usr/bin/env bash
# bash benchmarks/fetch_device_wheels.sh
#
# Downloads the wheels of benchmarks/device_wheels.txt into .whl/ (git-ignored) for the GPU
# machine of benchmarks/device_check.sh: CPython 3.12 on x86-64 Linux, binary wheels only, no
# dependencies (the machine has them). Pure-python wheels (py3-none-any) match any platform.
# Runs wherever pip reaches an index (or the local one it is configured with).

set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -Ev '^\s*(#|$)' benchmarks/device_wheels.txt | while read -r spec; do
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$spec"
done
ls -l .whl
