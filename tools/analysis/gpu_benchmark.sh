#!/usr/bin/env bash
# One-command GPU benchmark (tools/analysis/gpu_benchmark.py), from the
# repository root of a machine with torch, timm, numpy and Pillow:
#
#   bash tools/analysis/gpu_benchmark.sh [OUT] [gpu_benchmark.py args]
#   bash tools/analysis/gpu_benchmark.sh --help
#
# OUT is a folder (gpu_benchmark.json + gpu_benchmark.md are written into
# it) or a .json file (the .md goes next to it); default: $OUT if set (the
# device machine's output folder), else gpu_benchmark.json. The arguments
# after OUT go to gpu_benchmark.py (e.g. --images DIR, --quick, --device
# cpu, --budget-s S; `python tools/analysis/gpu_benchmark.py --help` lists
# them all).
#
# If mmengine is not importable and WHEELS names a folder of wheels
# (tools/misc/gpu_wheels.sh DIR downloads them: mmengine and the
# pure-Python packages it needs beyond the GPU image), they are installed
# into a temporary folder first; nothing is installed into the system
# Python. The run gets SIGINT after GPU_BENCH_TIMEOUT seconds (default 450)
# and is killed GPU_BENCH_KILL_AFTER seconds later (default 15) if it has
# not stopped: at most 7 min 45 s in all (exit status 3: stopped, the
# report written; 4: killed). The JSON and the Markdown are
# written after every arm, every timed repeat and every later part, so a
# stopped run keeps what it measured, and what it did not reach is listed
# under "cut".
set -euo pipefail
case "${1:-}" in
    -h|--help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        exit 0 ;;
esac
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
        echo "mmengine is not installed: set WHEELS=DIR, a folder of the" \
             "wheels that 'bash tools/misc/gpu_wheels.sh DIR' downloads" >&2
        exit 2
    fi
    SITE="$(mktemp -d)"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$PYTHONPATH:$SITE"
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm \
    --format=csv 2>/dev/null || true
rc=0
PYTHONUNBUFFERED=1 timeout -s INT -k "${GPU_BENCH_KILL_AFTER:-15}" \
    "${GPU_BENCH_TIMEOUT:-450}" \
    "$PYTHON" "$ROOT/tools/analysis/gpu_benchmark.py" --out "$DEST" "$@" \
    || rc=$?
# timeout's own 124 / 137 would read as the device tool's time-outs: say
# what happened and exit 3 (stopped at the limit) or 4 (killed after it).
if [ -f "$DEST" ]; then
    KEPT="$DEST holds what was done ('interrupted', 'cut')"
else
    KEPT="nothing was written yet"
fi
case $rc in
    124) echo "gpu_benchmark.sh: stopped at the" \
              "${GPU_BENCH_TIMEOUT:-450}-s limit; $KEPT" >&2
         exit 3 ;;
    137) echo "gpu_benchmark.sh: killed ${GPU_BENCH_KILL_AFTER:-15} s after" \
              "the stop; $KEPT" >&2
         exit 4 ;;
esac
exit $rc
