#!/usr/bin/env bash
# Create .venv and install the zoo. torch==2.13.0 goes first: on our machines it is a local CPU build,
# and letting pip resolve torch as a dependency would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e ".[test,export]"   # export: ONNX export and its tests
