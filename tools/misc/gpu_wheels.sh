#!/usr/bin/env bash
# Download the wheels tools/analysis/gpu_benchmark.sh installs on a GPU
# machine whose Python has torch, timm, numpy and Pillow but no mmengine:
#
#   bash tools/misc/gpu_wheels.sh DIR [PYTHON_VERSION]
#
# mmengine and the pure-Python packages it needs (addict, termcolor, yapf,
# platformdirs, rich, markdown-it-py, mdurl, pygments; pyyaml comes with
# timm), one version of each, as py3 wheels for CPython PYTHON_VERSION
# (default 3.12, the device machines' python3) on x86-64 Linux. DIR is
# emptied of wheels first: two versions of one package stop the install.
# Then: WHEELS=DIR bash tools/analysis/gpu_benchmark.sh OUT ...
set -euo pipefail
case "${1:-}" in
    ''|-h|--help)
        sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        [ -n "${1:-}" ] && exit 0 || exit 2 ;;
esac
DIR="$1"
PY="${2:-3.12}"
mkdir -p "$DIR"
rm -f "$DIR"/*.whl
"${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "$PY" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$DIR" \
    'mmengine>=0.10.4,<0.11' addict termcolor 'yapf==0.43.0' platformdirs \
    rich markdown-it-py mdurl pygments
ls "$DIR"
