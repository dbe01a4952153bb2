#!/usr/bin/env bash
# Distributed training: bash tools/dist_train.sh CONFIG NPROC [train.py ARGS]
# Without CUDA the processes use gloo on CPU (tools/train.py switches it), e.g.
#   bash tools/dist_train.sh configs/toy/toy_apt_det.py 2
# Environment: PYTHON (default python), NNODES, NODE_RANK, PORT, MASTER_ADDR.
set -euo pipefail
CONFIG=$1
NPROC=$2
shift 2
exec bash "$(dirname "$0")/dist_run.sh" train.py "$NPROC" "$CONFIG" "$@"
