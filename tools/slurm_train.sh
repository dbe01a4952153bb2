#!/usr/bin/env bash
# Training on a Slurm cluster, one task per GPU:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#       bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [WORK_DIR] [train.py ARGS]
# e.g. GPUS=64 bash tools/slurm_train.sh p1 apt_vitdet configs/apt_vitdet_coco.py
set -euo pipefail
if [ $# -gt 3 ] && [ "${4#-}" = "$4" ]; then  # a WORK_DIR, not an option
  set -- "${@:1:3}" --work-dir "${@:4}"
fi
exec bash "$(dirname "$0")/slurm_run.sh" train.py "$@"
