#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#       bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py ARGS]
# e.g. GPUS=64 bash tools/slurm_train.sh p1 apt_vitdet configs/apt_vitdet_coco.py
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py ARGS]" >&2
  exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
shift 3
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then  # a WORK_DIR, not an option
  set -- --work-dir "$@"
fi
exec bash "$(dirname "$0")/slurm_run.sh" train.py "$PARTITION" "$JOB_NAME" "$CONFIG" "$@"
