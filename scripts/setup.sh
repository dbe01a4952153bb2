#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the pinned OpenMMLab
# stack, mmcv 2.1.0 built from source with its CPU ops, and mmapt (editable).
# Idempotent: on a ready machine it only verifies the environment (< 60 s).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_BIN=${PYTHON:-python3.11}
command -v "$PYTHON_BIN" >/dev/null 2>&1 || PYTHON_BIN=python3
VENV=.venv
PY="$VENV/bin/python"
MMCV_VERSION=2.1.0
# The built mmcv wheel is kept outside the repo so a fresh clone reuses it.
WHEEL_CACHE=${MMAPT_WHEEL_CACHE:-$HOME/.cache/mmapt/wheels}
STAMP="$VENV/.mmapt-setup-stamp"
stamp_value=$(cat requirements.txt requirements/*.txt scripts/setup.sh setup.py | sha256sum | cut -d' ' -f1)

check_env() {
  "$PY" - <<'PYCHECK' >/dev/null 2>&1
import mmcv, mmdet, mmseg, mmengine, timm, torch, mmapt
from mmcv.ops import nms, RoIAlign
assert mmcv.__version__ == '2.1.0', mmcv.__version__
PYCHECK
}

if [ -x "$PY" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp_value" ] && check_env; then
  echo "mmapt environment is ready ($VENV)."
  exit 0
fi

[ -x "$PY" ] || "$PYTHON_BIN" -m venv "$VENV"
PIP=("$PY" -m pip install --disable-pip-version-check)

echo "[1/4] torch, torchvision and pinned base packages"
"${PIP[@]}" -r requirements/build.txt

echo "[2/4] mmcv $MMCV_VERSION with CPU ops (built once, cached in $WHEEL_CACHE)"
if ! "$PY" -c "import mmcv; from mmcv.ops import nms; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
  torch_tag=$("$PY" -c "import torch; print(torch.__version__.replace('+', '_'))")
  cache_dir="$WHEEL_CACHE/torch-$torch_tag"
  mkdir -p "$cache_dir"
  if ! ls "$cache_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    # mmcv 2.1.0's setup.py imports pkg_resources: it needs setuptools < 70 and
    # the venv's torch, hence no build isolation.
    "${PIP[@]}" "setuptools<70" wheel ninja
    # torch >= 2.10 headers need C++20 while mmcv 2.1.0 asks for C++17:
    # build from the sdist with that one flag raised.
    src_dir=$(mktemp -d)
    "$PY" -m pip download --no-deps --no-binary :all: "mmcv==$MMCV_VERSION" -d "$src_dir"
    tar xzf "$src_dir/mmcv-$MMCV_VERSION.tar.gz" -C "$src_dir"
    sed -i "s/extra_compile_args\['cxx'\] = \['-std=c++17'\]/extra_compile_args['cxx'] = ['-std=c++20']/" \
      "$src_dir/mmcv-$MMCV_VERSION/setup.py"
    MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$PY" -m pip wheel --no-build-isolation --no-deps "$src_dir/mmcv-$MMCV_VERSION" -w "$cache_dir"
    rm -rf "$src_dir"
  fi
  "${PIP[@]}" --no-deps "$cache_dir"/mmcv-"$MMCV_VERSION"-*.whl
fi

echo "[3/4] OpenMMLab, timm and test dependencies"
# Installing mmcv's own dependencies here also restores a current setuptools.
"${PIP[@]}" -r requirements.txt addict yapf "setuptools>=70" "mmcv==$MMCV_VERSION"

echo "[4/4] mmapt (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e .

check_env || { echo "set-up finished but the environment check failed" >&2; "$PY" -c "import mmcv, mmdet, mmseg, timm, mmapt; from mmcv.ops import nms"; exit 1; }
echo "$stamp_value" > "$STAMP"
echo "mmapt environment is ready ($VENV)."
