#!/usr/bin/env bash
# torchrun wrapper shared by dist_train.sh and dist_test.sh:
#   bash tools/dist_run.sh SCRIPT NPROC [SCRIPT ARGS]   (SCRIPT: train.py or test.py)
# Environment: PYTHON (default python), NNODES, NODE_RANK, PORT, MASTER_ADDR.
set -euo pipefail
SCRIPT=$1
NPROC=$2
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" \
    --master_port="${PORT:-29500}" \
    "$ROOT/tools/$SCRIPT" "$@" --launcher pytorch
