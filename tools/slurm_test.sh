#!/usr/bin/env bash
# Testing on a Slurm cluster, one task per GPU:
#   [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS=...] \
#       bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py ARGS]
# e.g. bash tools/slurm_test.sh p1 apt_upernet configs/apt_upernet_ade20k.py ckpt.pth --tta
set -euo pipefail
exec bash "$(dirname "$0")/slurm_run.sh" test.py "$@"
