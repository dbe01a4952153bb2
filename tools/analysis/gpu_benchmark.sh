#!/usr/bin/env bash
# One-command GPU benchmark (tools/analysis/gpu_benchmark.py), from the
# repository root of a machine with torch, timm, numpy and Pillow:
#
#   bash tools/analysis/gpu_benchmark.sh [OUT] [gpu_benchmark.py args]
#
# OUT is a folder (gpu_benchmark.json + gpu_benchmark.md are written into
# it) or a .json file (the .md goes next to it); default: $OUT if set (the
# device machine's output folder), else gpu_benchmark.json.
# If mmengine is not importable and WHEELS names a folder of wheels
# (mmengine and its pure-Python dependencies: addict, termcolor, yapf,
# platformdirs, rich, markdown-it-py, mdurl, pygments; pyyaml comes with
# timm), they are installed into a temporary folder
# first; nothing is installed into the system Python. The run is stopped
# (SIGINT) after GPU_BENCH_TIMEOUT seconds (default 470, under 8 minutes);
# the JSON is written after every architecture, so a stopped run keeps what
# it measured.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="${1:-${OUT:-gpu_benchmark.json}}"
shift || true
if [ -d "$DEST" ] || [[ "$DEST" != *.json ]]; then
    mkdir -p "$DEST"
    DEST="$DEST/gpu_benchmark.json"
fi
PYTHON="${PYTHON:-python3}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c 'import mmengine' 2>/dev/null; then
    if [ -z "${WHEELS:-}" ]; then
        echo "mmengine is not installed: set WHEELS=DIR (a folder of the" \
             "mmengine, addict, termcolor, yapf, platformdirs, rich," \
             "markdown-it-py, mdurl, pygments wheels: pip download" \
             "--no-deps -d DIR ...)" >&2
        exit 2
    fi
    SITE="$(mktemp -d)"
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE" \
        "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>/dev/null || true
PYTHONUNBUFFERED=1 timeout -s INT "${GPU_BENCH_TIMEOUT:-470}" \
    "$PYTHON" "$ROOT/tools/analysis/gpu_benchmark.py" --out "$DEST" "$@"
