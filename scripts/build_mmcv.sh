#!/usr/bin/env bash
# Build the mmcv 2.1.0 wheel with its compiled ops, CPU-only or with CUDA:
#   bash scripts/build_mmcv.sh PYTHON WHEEL_DIR
# Called by scripts/setup.sh (which installs the build requirements first:
# torch, setuptools < 70, wheel, ninja). Environment:
#   MMCV_BUILD_MODE  cpu | cuda (default: cuda when torch sees a GPU or
#                    FORCE_CUDA=1, else cpu)
#   MMCV_SDIST       a local mmcv-2.1.0.tar.gz (default: downloaded with pip)
#   CUDA_HOME        the CUDA toolkit whose bin/nvcc builds the CUDA ops
#   TORCH_CUDA_ARCH_LIST, MAX_JOBS   as for any torch extension build
# Why a patched sdist: mmcv 2.1.0 asks for -std=c++17 (host compiler and nvcc)
# while torch >= 2.10 headers need C++20; its setup.py imports pkg_resources
# (setuptools < 70, hence --no-build-isolation); and it switches to a CUDA
# build whenever torch sees a GPU, whatever FORCE_CUDA says, so the mode is
# decided here and the environment made to agree with it.
set -euo pipefail
PY=$1
WHEEL_DIR=$2
MMCV_VERSION=2.1.0

fail() { echo "build_mmcv.sh: $*" >&2; exit 1; }

"$PY" -c 'import pkg_resources' 2>/dev/null ||
  fail "mmcv $MMCV_VERSION's setup.py imports pkg_resources: install \"setuptools<70\" into $PY's environment first"

read -r cuda_version has_gpu < <("$PY" -c '
import torch
print(torch.version.cuda or "none", int(torch.cuda.is_available()))')
mode=${MMCV_BUILD_MODE:-}
if [ -z "$mode" ]; then
  if [ "$has_gpu" = 1 ] || [ "${FORCE_CUDA:-0}" = 1 ]; then mode=cuda; else mode=cpu; fi
fi
if [ "$mode" = cpu ] && [ "$has_gpu" = 1 ]; then
  # mmcv's setup.py would build the CUDA ops anyway.
  fail "a GPU is visible: mmcv builds its CUDA ops there; set MMCV_BUILD_MODE=cuda (or hide the GPU with CUDA_VISIBLE_DEVICES=)"
fi

src_dir=$(mktemp -d)
trap 'rm -rf "$src_dir"' EXIT
if [ -n "${MMCV_SDIST:-}" ]; then
  cp "$MMCV_SDIST" "$src_dir/"
else
  # No build isolation: the metadata step runs mmcv's setup.py, which needs
  # the pkg_resources and torch of this environment.
  "$PY" -m pip download --disable-pip-version-check --no-deps \
    --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$src_dir"
fi
tar xzf "$src_dir/mmcv-$MMCV_VERSION.tar.gz" -C "$src_dir"
src="$src_dir/mmcv-$MMCV_VERSION"
# Raise the two C++ standard flags (host compiler and nvcc) to C++20.
sed -i "s/\['-std=c++17'\]/['-std=c++20']/g" "$src/setup.py"
[ "$(grep -c "\['-std=c++20'\]" "$src/setup.py")" -ge 2 ] ||
  fail "could not raise -std=c++17 to c++20 in mmcv's setup.py (has the sdist changed?)"

if [ "$mode" = cuda ]; then
  [ "$cuda_version" != none ] ||
    fail "a CUDA build needs a CUDA build of torch; this torch is CPU-only"
  [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ] ||
    fail "a CUDA build needs nvcc: set CUDA_HOME to a CUDA $cuda_version toolkit (scripts/setup.sh installs one from PyPI)"
  nvcc_version=$("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
  [ "${nvcc_version%%.*}" = "${cuda_version%%.*}" ] ||
    fail "nvcc $nvcc_version ($CUDA_HOME) does not match torch's CUDA $cuda_version"
  export CUDA_HOME PATH="$CUDA_HOME/bin:$PATH" FORCE_CUDA=1
  echo "mmcv $MMCV_VERSION: CUDA build (torch CUDA $cuda_version, nvcc $nvcc_version in $CUDA_HOME, archs ${TORCH_CUDA_ARCH_LIST:-of the visible GPUs})"
else
  export FORCE_CUDA=0
  echo "mmcv $MMCV_VERSION: CPU-only build"
fi
mkdir -p "$WHEEL_DIR"
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  "$PY" -m pip wheel --disable-pip-version-check --no-build-isolation \
  --no-deps "$src" -w "$WHEEL_DIR"
