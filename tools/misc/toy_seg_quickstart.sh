#!/usr/bin/env bash
# Toy segmentation quick start, end to end on a CPU: generate the toy
# ADE20K-layout data, train the APT toy segmentor, test it (mIoU + tokens).
#
#   bash tools/misc/toy_seg_quickstart.sh            # APT, 300 iterations
#   ITERS=50 bash tools/misc/toy_seg_quickstart.sh   # a 50-iteration run (make toy-seg ITERS=50)
#   CONFIG=configs/toy/toy_eva02_seg.py bash tools/misc/toy_seg_quickstart.sh
#
# ITERS shortens training (the poly schedule keeps its 300-iteration shape).
# Extra arguments are more key=value config overrides for training, e.g.
#   bash tools/misc/toy_seg_quickstart.sh optim_wrapper.optimizer.lr=2e-4
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/misc/quickstart_common.sh

DATA=${DATA:-data/toy_ade}
# 2.5-6 s an iteration, 60 s start-up + validation, 50 s test (2-core CPU)
quickstart_run configs/toy/toy_apt_seg.py 25 60 60 50
DATA_OPTS=(train_dataloader.dataset.data_root="$DATA"
           val_dataloader.dataset.data_root="$DATA"
           test_dataloader.dataset.data_root="$DATA")
training_options "$CONFIG" "${DATA_OPTS[@]}" "$@"

if [ ! -d "$DATA/images/training" ]; then
  echo "[1/3] generating the toy ADE20K-layout set in $DATA: under a minute"
  "$PY" tools/misc/make_toy_ade.py "$DATA"
else
  echo "[1/3] toy ADE20K-layout set found in $DATA"
fi

train_then_test "the validation images (slide inference, mIoU, tokens kept)" \
  --cfg-options "${DATA_OPTS[@]}"
