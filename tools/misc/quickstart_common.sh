# Shared by toy_det_quickstart.sh and toy_seg_quickstart.sh (sourced from the
# repository root). Sets PY: the project's venv when there is one (make
# setup), else PYTHON, else python on PATH.
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; fi
PY=${PYTHON:-python}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "no Python at '$PY': run \`make setup\` first, or set PYTHON=/path/to/python" >&2
  exit 2
fi

# quickstart_run DEFAULT_CONFIG FAST SLOW FIXED_SEC TEST_SEC: sets CONFIG (the
# CONFIG environment variable, else DEFAULT_CONFIG), WORK_DIR (the WORK_DIR
# environment variable, else work_dirs/<config name>) and the numbers of the
# time estimates printed: tenths of a second per training iteration on a
# 2-core CPU, from a lightly loaded machine (FAST) to one shared with two
# other trainings (SLOW), and the seconds of start-up + validation
# (FIXED_SEC) and of the test (TEST_SEC), as measured for README's "Quick
# start".
quickstart_run() {
  CONFIG=${CONFIG:-$1}
  WORK_DIR=${WORK_DIR:-work_dirs/$(basename "$CONFIG" .py)}
  FAST=$2
  SLOW=$3
  FIXED_SEC=$4
  TEST_SEC=$5
}

# training_options CONFIG [KEY=VALUE ...]: sets ITERATIONS (ITERS when given,
# else the config's train_cfg.max_iters) and TRAIN_OPTIONS (`--cfg-options
# ...` with the overrides, or nothing). ITERS also moves the checkpoint and
# the validation to the last iteration, so the test step finds a checkpoint.
training_options() {
  local config=$1
  shift
  local schedule=()
  if [ -n "${ITERS:-}" ]; then
    if ! [[ "$ITERS" =~ ^[1-9][0-9]*$ ]]; then
      echo "ITERS must be a positive whole number of iterations, got '$ITERS' (e.g. ITERS=50)" >&2
      exit 2
    fi
    schedule=(train_cfg.max_iters="$ITERS" train_cfg.val_interval="$ITERS"
              default_hooks.checkpoint.interval="$ITERS")
    ITERATIONS=$ITERS
  else
    ITERATIONS=$("$PY" -c 'import sys; from mmengine.config import Config
print(Config.fromfile(sys.argv[1], import_custom_modules=False).train_cfg.max_iters)' "$config")
  fi
  TRAIN_OPTIONS=("${schedule[@]}" "$@")
  if [ ${#TRAIN_OPTIONS[@]} -gt 0 ]; then
    TRAIN_OPTIONS=(--cfg-options "${TRAIN_OPTIONS[@]}")
  fi
}

# estimate ITERATIONS FAST SLOW FIXED: "about A-B min" for ITERATIONS at
# FAST to SLOW tenths of a second an iteration, plus FIXED seconds (start-up,
# validation): the range measured on a 2-core CPU, idle-ish to busy.
estimate() {
  local low=$((($1 * $2 / 10 + $4 + 59) / 60)) high=$((($1 * $3 / 10 + $4 + 59) / 60))
  if [ "$low" = "$high" ]; then echo "about $low min"; else echo "about $low-$high min"; fi
}

# train_then_test TESTED [TEST_OPTION ...]: steps 2 and 3, training CONFIG
# into WORK_DIR with TRAIN_OPTIONS, then testing its last checkpoint
# (TESTED says on what) and printing the metrics. Uses CONFIG, WORK_DIR,
# ITERATIONS, TRAIN_OPTIONS, FAST, SLOW, FIXED_SEC and TEST_SEC.
train_then_test() {
  local tested=$1
  shift
  echo "[2/3] training $CONFIG for $ITERATIONS iterations, then validating, into" \
    "$WORK_DIR: $(estimate "$ITERATIONS" "$FAST" "$SLOW" "$FIXED_SEC") on a 2-core" \
    "CPU (loss, keep ratio and eta every 5 iterations)"
  "$PY" tools/train.py "$CONFIG" --work-dir "$WORK_DIR" "${TRAIN_OPTIONS[@]}"
  local checkpoint
  checkpoint=$(cat "$WORK_DIR/last_checkpoint")
  echo "[3/3] testing $checkpoint on $tested: $(estimate 0 0 0 "$TEST_SEC")"
  "$PY" tools/test.py "$CONFIG" "$checkpoint" --work-dir "$WORK_DIR/test" "$@"
  echo "metrics: $WORK_DIR/test/test_metrics.json"
  cat "$WORK_DIR/test/test_metrics.json"
}
