#!/usr/bin/env bash
# Checks edgec's TensorRT engine module against the real tensorrt Python bindings of the newest 10.x and 11.x on the
# package index, without a GPU: downloads both bindings wheels (about 1.3 MB each; the tensorrt -libs packages on
# the index are stubs that need NVIDIA's own index, so the module itself cannot be imported here), then
# scripts/trt_api_check.py compares every name the engine module reads from tensorrt objects (found with Python's
# ast) with the identifiers compiled into each wheel's tensorrt.so. Exits 1 on any missing name.
# Writes benchmarks/results-trt-api-check.json and its section of benchmarks/RESULTS.md. Not part of `make test`.
# Usage: scripts/trt_api_check.sh   (PYTHON overrides the interpreter; its version picks the wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
work=$(mktemp -d /tmp/edgec-trt-api.XXXXXX)
trap 'rm -rf "$work"' EXIT
# TensorRT 10.x ships CUDA 12 bindings, 11.x CUDA 13 ones (also published under the cu12 name).
for requirement in "tensorrt_cu12_bindings>=10,<11" "tensorrt_cu13_bindings>=11,<12"; do
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$requirement"
done
"$PYTHON" scripts/trt_api_check.py "$work"/*.whl
