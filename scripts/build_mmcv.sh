#!/usr/bin/env bash
# Build the mmcv 2.1.0 wheel with its compiled ops, CPU-only or with CUDA:
#   bash scripts/build_mmcv.sh PYTHON WHEEL_DIR
#   bash scripts/build_mmcv.sh --print-cuda-home PYTHON   (exit 1: none found)
# Called by scripts/setup.sh (which installs the build requirements first:
# torch, setuptools < 70, wheel, ninja). Environment:
#   MMCV_BUILD_MODE  cpu | cuda (default: cuda when torch sees a GPU or
#                    FORCE_CUDA=1, else cpu)
#   MMCV_SDIST       a local mmcv-2.1.0.tar.gz (default: downloaded with pip)
#   CUDA_HOME        the CUDA toolkit whose bin/nvcc builds the CUDA ops
#                    (default: the first nvcc of torch's CUDA version among
#                    CUDA_HOME, /usr/local/cuda, the PATH and the
#                    nvidia-cuda-nvcc wheels in PYTHON's environment)
#   TORCH_CUDA_ARCH_LIST, MAX_JOBS   as for any torch extension build
# Why a patched sdist: mmcv 2.1.0 asks for -std=c++17 (host compiler and nvcc)
# while torch >= 2.10 headers need C++20; its setup.py imports pkg_resources
# (setuptools < 70, hence --no-build-isolation); and it switches to a CUDA
# build whenever torch sees a GPU, whatever FORCE_CUDA says, so the mode is
# decided here and the environment made to agree with it.
set -euo pipefail
MMCV_VERSION=2.1.0

fail() { echo "build_mmcv.sh: $*" >&2; exit 1; }

# The CUDA toolkit root of the first nvcc whose release equals torch's CUDA
# version (major.minor).
find_cuda_home() {
  local py=$1 cuda_version nvcc version home wheel_nvcc
  cuda_version=$("$py" -c 'import torch; print(torch.version.cuda or "none")')
  [ "$cuda_version" != none ] || return 1
  wheel_nvcc=$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu'"${cuda_version%%.*}"'", "bin", "nvcc"))' 2>/dev/null || true)
  for nvcc in "${CUDA_HOME:+$CUDA_HOME/bin/nvcc}" /usr/local/cuda/bin/nvcc \
      "$(command -v nvcc || true)" "$wheel_nvcc"; do
    [ -n "$nvcc" ] && [ -x "$nvcc" ] || continue
    version=$("$nvcc" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
    home=$(dirname "$(dirname "$(readlink -f "$nvcc")")")
    # A wrapper script elsewhere on the PATH is no toolkit root.
    if [ "$version" = "$cuda_version" ] && [ -f "$home/include/cuda_runtime.h" ]; then
      echo "$home"
      return 0
    fi
  done
  return 1
}

if [ "${1:-}" = --print-cuda-home ]; then
  find_cuda_home "$2"
  exit
fi
PY=$1
WHEEL_DIR=$2

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
  CUDA_HOME=$(find_cuda_home "$PY") ||
    fail "a CUDA build needs nvcc $cuda_version (torch's CUDA): set CUDA_HOME to a CUDA $cuda_version toolkit (scripts/setup.sh installs NVIDIA's nvcc wheels for CUDA >= 13)"
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
