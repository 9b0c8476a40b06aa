#!/usr/bin/env bash
# One GPU, no download, about 8 minutes: SD 1.5's architecture (random weights) at 512 px.
# Usage: benchmarks/gpu_check.sh [--dry-run] [--out DIR] [...]  (python -m benchmarks.gpu_check -h)
# Writes gpu_check.json section by section; stops at TAMER_GPU_CHECK_TIMEOUT seconds (480).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${TAMER_GPU_CHECK_TIMEOUT:-480}" "$PYTHON" -m benchmarks.gpu_check "$@"
