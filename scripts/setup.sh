#!/usr/bin/env bash
# Create .venv and install the zoo. torch==2.13.0 goes first: on our machines it is a local CPU build,
# and letting pip resolve torch as a dependency would pull several GB of CUDA packages.
#   VENV=DIR        another virtualenv folder (default .venv)
#   PIP_CONSTRAINT  a pip constraints file, e.g. .ci/constraints-oldest.txt (pip reads the variable itself)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.13.0
"$VENV/bin/pip" install -q -e ".[test,export]"   # export: ONNX export and its tests
