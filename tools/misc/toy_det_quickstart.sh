#!/usr/bin/env bash
# Toy detection quick start, end to end on a CPU: generate the toy COCO set
# (data/toy_coco), train the APT toy detector (Cascade Mask R-CNN, tiny
# EVA-02), test it with CocoMetric (box/mask AP + tokens kept).
#
#   bash tools/misc/toy_det_quickstart.sh            # APT, 300 iterations
#   ITERS=50 bash tools/misc/toy_det_quickstart.sh   # a 50-iteration run (make toy-det ITERS=50)
#   CONFIG=configs/toy/toy_eva02_det.py bash tools/misc/toy_det_quickstart.sh
#
# ITERS shortens training; the learning-rate schedule keeps its 300-iteration
# shape, so a short run shows the pipeline working, not the toy's AP. Extra
# arguments are more key=value config overrides for training, e.g.
#   bash tools/misc/toy_det_quickstart.sh optim_wrapper.optimizer.lr=2e-4
# The authors' recipe (APT fine-tune of the trained baseline, 15 iterations):
#   CONFIG=configs/toy/toy_eva02_det.py bash tools/misc/toy_det_quickstart.sh
#   CONFIG=configs/toy/toy_apt_det_finetune.py bash tools/misc/toy_det_quickstart.sh
# On a machine shared with other jobs, OMP_NUM_THREADS=1 is much faster.
set -euo pipefail
cd "$(dirname "$0")/../.."
source tools/misc/quickstart_common.sh

# 1.5-6 s an iteration, 60 s start-up + validation, 70 s test (2-core CPU)
quickstart_run configs/toy/toy_apt_det.py 15 60 60 70
training_options "$CONFIG" "$@"

# The toy configs read data/toy_coco/ (COCO 2017 layout).
if [ ! -f data/toy_coco/annotations/instances_val2017.json ]; then
  echo "[1/3] generating the toy COCO set in data/toy_coco (384 images): about 15 s"
  "$PY" tools/misc/make_toy_coco.py data/toy_coco
else
  echo "[1/3] toy COCO set found in data/toy_coco"
fi

train_then_test "the 64 validation images (CocoMetric box / mask AP, tokens kept)"
