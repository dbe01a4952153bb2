#!/usr/bin/env bash
# Distributed test: bash tools/dist_test.sh CONFIG CHECKPOINT NPROC [test.py ARGS]
# Without CUDA the processes use gloo on CPU.
# Environment: PYTHON (default python), NNODES, NODE_RANK, PORT, MASTER_ADDR.
set -euo pipefail
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
exec bash "$(dirname "$0")/dist_run.sh" test.py "$NPROC" "$CONFIG" "$CHECKPOINT" "$@"
