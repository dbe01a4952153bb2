#!/usr/bin/env bash
# Toy segmentation quick start, end to end on a CPU: generate the toy
# ADE20K-layout data, train the APT toy segmentor, test it (mIoU + tokens).
#
#   bash tools/misc/toy_seg_quickstart.sh            # APT
#   CONFIG=configs/toy/toy_eva02_seg.py bash tools/misc/toy_seg_quickstart.sh
#
# Extra arguments are more key=value config overrides for training, e.g.
#   bash tools/misc/toy_seg_quickstart.sh train_cfg.max_iters=20
set -euo pipefail
cd "$(dirname "$0")/../.."

PY=${PYTHON:-python}
DATA=${DATA:-data/toy_ade}
CONFIG=${CONFIG:-configs/toy/toy_apt_seg.py}
NAME=$(basename "$CONFIG" .py)
WORK_DIR=${WORK_DIR:-work_dirs/$NAME}

if [ ! -d "$DATA/images/training" ]; then
  "$PY" tools/misc/make_toy_ade.py "$DATA"
fi
DATA_OPTS=(train_dataloader.dataset.data_root="$DATA"
           val_dataloader.dataset.data_root="$DATA"
           test_dataloader.dataset.data_root="$DATA")

"$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" \
  --cfg-options "${DATA_OPTS[@]}" "$@"
CKPT=$(cat "$WORK_DIR/last_checkpoint")
"$PY" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK_DIR/test" \
  --cfg-options "${DATA_OPTS[@]}"
echo "metrics: $WORK_DIR/test/test_metrics.json"
cat "$WORK_DIR/test/test_metrics.json"
