#!/usr/bin/env bash
# One-command GPU benchmark (tools/analysis/gpu_benchmark.py), from the
# repository root of a machine with torch, timm, numpy and Pillow:
#
#   bash tools/analysis/gpu_benchmark.sh [OUT.json] [gpu_benchmark.py args]
#
# If mmengine is not importable and WHEELS names a folder of wheels
# (mmengine and its pure-Python dependencies: addict, termcolor, yapf,
# platformdirs), they are installed into a temporary folder first; nothing
# is installed into the system Python.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
OUT="${1:-gpu_benchmark.json}"
shift || true
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c 'import mmengine' 2>/dev/null; then
    if [ -z "${WHEELS:-}" ]; then
        echo "mmengine is not installed: set WHEELS=DIR (a folder of the" \
             "mmengine, addict, termcolor, yapf, platformdirs wheels)" >&2
        exit 2
    fi
    SITE="$(mktemp -d)"
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>/dev/null || true
PYTHONUNBUFFERED=1 "$PYTHON" "$ROOT/tools/analysis/gpu_benchmark.py" \
    --out "$OUT" "$@"
