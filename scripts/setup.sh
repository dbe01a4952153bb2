#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with the pinned OpenMMLab
# stack, mmcv 2.1.0 built from source with its ops (CPU-only, or with CUDA
# when torch sees a GPU or FORCE_CUDA=1), and mmapt (editable).
# Idempotent: on a ready machine it only verifies the environment (< 60 s).
# GPU hosts: docs/install.md says what this does there and what was tested.
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
stamp_value=$(cat requirements.txt requirements/*.txt scripts/setup.sh scripts/build_mmcv.sh setup.py | sha256sum | cut -d' ' -f1)

check_env() {
  "$PY" - <<'PYCHECK' >/dev/null 2>&1
import mmcv, mmdet, mmseg, mmengine, timm, torch, mmapt
from mmcv.ops import nms, RoIAlign
assert mmcv.__version__ == '2.1.0', mmcv.__version__
if torch.cuda.is_available():
    # On a GPU host mmdet runs these ops on GPU tensors.
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]]).cuda()
    nms(boxes, torch.tensor([0.9, 0.8]).cuda(), 0.5)
    RoIAlign(2, 1.0)(torch.rand(1, 1, 8, 8).cuda(),
                     torch.tensor([[0., 0., 0., 4., 4.]]).cuda())
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

# CPU-only or CUDA mmcv: mmcv's own setup.py builds the CUDA ops whenever
# torch sees a GPU, so a GPU host always gets the CUDA build.
read -r torch_tag cuda_version has_gpu gpu_archs < <("$PY" -c '
import torch
gpu = torch.cuda.is_available()
archs = sorted({"%d.%d" % torch.cuda.get_device_capability(i)
                for i in range(torch.cuda.device_count())}) if gpu else []
print(torch.__version__.replace("+", "_"), torch.version.cuda or "none",
      int(gpu), ";".join(archs) or "none")')
[ -n "$torch_tag" ] || { echo "could not import torch from $PY" >&2; exit 1; }
if [ "$has_gpu" = 1 ] || [ "${FORCE_CUDA:-0}" = 1 ]; then
  mode=cuda
  if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
    [ "$gpu_archs" != none ] || { echo "FORCE_CUDA=1 without a visible GPU: set TORCH_CUDA_ARCH_LIST (e.g. '8.0;9.0')" >&2; exit 1; }
    export TORCH_CUDA_ARCH_LIST=$gpu_archs
  fi
  # The cache key names the CUDA version and the GPU architectures built for.
  cache_dir="$WHEEL_CACHE/torch-$torch_tag-cuda$cuda_version-sm$(echo "$TORCH_CUDA_ARCH_LIST" | tr -c '0-9A-Za-z\n' '_')"
else
  mode=cpu
  cache_dir="$WHEEL_CACHE/torch-$torch_tag-cpu"
  # Wheels cached before the key named the mode were all CPU-only builds.
  legacy="$WHEEL_CACHE/torch-$torch_tag"
  if ! ls "$cache_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1 &&
     ls "$legacy"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    mkdir -p "$cache_dir" && cp "$legacy"/mmcv-"$MMCV_VERSION"-*.whl "$cache_dir/"
  fi
fi

# The installed mmcv is 2.1.0 with compiled ops of the wanted mode. CUDA ops
# are recognised in the extension binary: mmcv's get_compiling_cuda_version()
# crashed in a CUDA build against torch 2.11 (docs/install.md).
mmcv_ok() {
  "$PY" - "$mode" <<'PYMMCV' >/dev/null 2>&1
import importlib.util, sys
import mmcv
from mmcv.ops import nms
assert mmcv.__version__ == '2.1.0'
with open(importlib.util.find_spec('mmcv._ext').origin, 'rb') as f:
    has_cuda = b'NMSCUDAKernelLauncher' in f.read()
assert has_cuda == (sys.argv[1] == 'cuda')
PYMMCV
}

echo "[2/4] mmcv $MMCV_VERSION with $mode ops (built once, cached in $cache_dir)"
if ! mmcv_ok; then
  if ! ls "$cache_dir"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    # mmcv 2.1.0's setup.py imports pkg_resources: setuptools < 70.
    "${PIP[@]}" "setuptools<70" wheel ninja
    if [ "$mode" = cuda ]; then
      [ "$cuda_version" != none ] || { echo "FORCE_CUDA=1 needs a CUDA build of torch; $torch_tag is CPU-only" >&2; exit 1; }
      # nvcc of torch's CUDA version: CUDA_HOME, /usr/local/cuda, the PATH,
      # or NVIDIA's nvcc wheels in .venv (installed here when none is found).
      if ! CUDA_HOME=$(bash scripts/build_mmcv.sh --print-cuda-home "$PY"); then
        case "$cuda_version" in
          1[3-9].*)
            echo "no nvcc $cuda_version found: installing NVIDIA's nvcc $cuda_version wheels into $VENV"
            "${PIP[@]}" "nvidia-cuda-nvcc==$cuda_version.*" "nvidia-cuda-crt==$cuda_version.*" \
              "nvidia-nvvm==$cuda_version.*" "nvidia-cuda-cccl==$cuda_version.*" \
              "nvidia-cuda-runtime==$cuda_version.*"
            CUDA_HOME=$(bash scripts/build_mmcv.sh --print-cuda-home "$PY") || { echo "nvcc $cuda_version still not found after installing the nvidia-cuda-nvcc wheels" >&2; exit 1; } ;;
          *)
            echo "mmcv's CUDA ops need nvcc $cuda_version (torch $torch_tag) and none was found:" \
                 "install the CUDA $cuda_version toolkit and rerun with CUDA_HOME=/path/to/cuda-$cuda_version" >&2
            exit 1 ;;
        esac
      fi
      # The runtime wheel ships libcudart.so.N only; the extension links -lcudart.
      for libdir in "$CUDA_HOME/lib64" "$CUDA_HOME/lib"; do
        if [ -d "$libdir" ] && [ ! -e "$libdir/libcudart.so" ] && [ -e "$libdir/libcudart.so.${cuda_version%%.*}" ]; then
          ln -s "libcudart.so.${cuda_version%%.*}" "$libdir/libcudart.so"
        fi
      done
      export CUDA_HOME
    fi
    MMCV_BUILD_MODE=$mode bash scripts/build_mmcv.sh "$PY" "$cache_dir"
  fi
  "${PIP[@]}" --no-deps --force-reinstall "$cache_dir"/mmcv-"$MMCV_VERSION"-*.whl
fi

echo "[3/4] OpenMMLab, timm and test dependencies"
# Installing mmcv's own dependencies here also restores a current setuptools;
# < 81 keeps pkg_resources, which mim and mmengine's package lookups import.
"${PIP[@]}" -r requirements.txt addict yapf "setuptools>=70,<81" "mmcv==$MMCV_VERSION"
"${PIP[@]}" --no-deps -r requirements/mim.txt

echo "[4/4] mmapt (editable)"
"${PIP[@]}" --no-deps --no-build-isolation -e .

check_env || { echo "set-up finished but the environment check failed" >&2; "$PY" -c "import mmcv, mmdet, mmseg, timm, mmapt; from mmcv.ops import nms"; exit 1; }
echo "$stamp_value" > "$STAMP"
echo "mmapt environment is ready ($VENV)."
