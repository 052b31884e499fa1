#!/usr/bin/env bash
# The GPU figures of docs/throughput.md in one run, under 4 minutes, nothing to set up beyond the
# README install: veto frames/s at 1 Mpx (float32 and bfloat16, preprocessing on the GPU), with
# Grad-CAM, and reduce end to end on a generated file; prints one table.
#   bash benchmarks/gpu_check.sh [--json gpu.json] [--quick] [--device cpu] ...
# Without a GPU it runs on the CPU (--quick: tiny frames; the tests run it so).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
exec "$PYTHON" benchmarks/gpu_check.py "$@"
