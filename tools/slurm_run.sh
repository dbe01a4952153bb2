#!/usr/bin/env bash
# srun wrapper shared by slurm_train.sh and slurm_test.sh, one task per GPU:
#   bash tools/slurm_run.sh SCRIPT PARTITION JOB_NAME [SCRIPT ARGS]   (SCRIPT: train.py or test.py)
# Environment: GPUS (default 8), GPUS_PER_NODE (default min(GPUS, 8)),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun options), PYTHON.
set -euo pipefail
SCRIPT=${1:-}
shift || true
# What each launcher needs after PARTITION JOB_NAME (its usage line).
case $SCRIPT in
  train.py) NEED=1 USAGE="CONFIG [WORK_DIR] [train.py ARGS]" ;;
  test.py) NEED=2 USAGE="CONFIG CHECKPOINT [test.py ARGS]" ;;
  *) echo "slurm_run.sh: SCRIPT must be train.py or test.py, got '$SCRIPT'" >&2; exit 2 ;;
esac
if [ $# -lt $((NEED + 2)) ]; then
  echo "usage: bash tools/slurm_${SCRIPT%.py}.sh PARTITION JOB_NAME $USAGE" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
shift 2
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
