#!/usr/bin/env bash
# srun wrapper shared by slurm_train.sh and slurm_test.sh, one task per GPU:
#   bash tools/slurm_run.sh SCRIPT PARTITION JOB_NAME [SCRIPT ARGS]   (SCRIPT: train.py or test.py)
# Environment: GPUS (default 8), GPUS_PER_NODE (default min(GPUS, 8)),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options), PYTHON.
set -euo pipefail
SCRIPT=$1
PARTITION=$2
JOB_NAME=$3
shift 3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

# SRUN_ARGS is split on purpose: it holds several srun options.
# shellcheck disable=SC2086
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$ROOT/tools/$SCRIPT" "$@" --launcher slurm
