#!/usr/bin/env bash
# Toy detection quick start, end to end on a CPU: generate the toy COCO set
# (data/toy_coco), train the APT toy detector (Cascade Mask R-CNN, tiny
# EVA-02), test it with CocoMetric (box/mask AP + tokens kept).
#
#   bash tools/misc/toy_det_quickstart.sh            # APT
#   CONFIG=configs/toy/toy_eva02_det.py bash tools/misc/toy_det_quickstart.sh
#
# Extra arguments are more key=value config overrides for training, e.g.
#   bash tools/misc/toy_det_quickstart.sh train_cfg.max_iters=50
# The authors' recipe (APT fine-tune of the trained baseline, 15 iterations):
#   CONFIG=configs/toy/toy_eva02_det.py bash tools/misc/toy_det_quickstart.sh
#   CONFIG=configs/toy/toy_apt_det_finetune.py bash tools/misc/toy_det_quickstart.sh
# On a machine shared with other jobs, OMP_NUM_THREADS=1 is much faster.
set -euo pipefail
cd "$(dirname "$0")/../.."

# The project's venv when there is one (make setup), else python on PATH.
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PY=${PYTHON:-python}
CONFIG=${CONFIG:-configs/toy/toy_apt_det.py}
NAME=$(basename "$CONFIG" .py)
WORK_DIR=${WORK_DIR:-work_dirs/$NAME}

# The toy configs read data/toy_coco/ (COCO 2017 layout).
if [ ! -f data/toy_coco/annotations/instances_val2017.json ]; then
  "$PY" tools/misc/make_toy_coco.py data/toy_coco
fi

if [ $# -gt 0 ]; then
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" --cfg-options "$@"
else
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR"
fi
CKPT=$(cat "$WORK_DIR/last_checkpoint")
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test"
echo "metrics: $WORK_DIR/test/test_metrics.json"
cat "$WORK_DIR/test/test_metrics.json"
