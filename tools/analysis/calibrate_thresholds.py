"""Calibrate APT thresholds or token budgets on your images, without labels.

Score maps are computed once per image and scorer; every candidate setting
then only re-runs the (cheap) patch selection. Threshold search keeps the
*shape* of a reference threshold vector (the paper's detection setting by
default for ``entropy``, equal thresholds for the other scorers, whose
scores are per-pixel quantities comparable across scales) and scales it
until the mean keep ratio over the images meets the target::

    python tools/analysis/calibrate_thresholds.py data/photos --canvas 1536 \
        --patch-sizes 16 32 64 128 --reference 2 2 0.3 --target-keep 0.7

Several scorers and budget-mode settings side by side, with the keep-ratio
distribution of every setting as a plot (box per setting)::

    python tools/analysis/calibrate_thresholds.py data/photos --canvas 1536 \
        --scorers entropy contrast gradient --target-keep 0.7 \
        --keep-ratios 0.5 0.7 --plot outputs/keep_ratios.png

Feature drift (needs a trained plain model and its config; still no
labels): the APT backbone (the plain weights, APT layers zero-initialised)
and the plain one run on every image, and the tool reports how far APT's
output features move from the plain model's (relative error
``|F_apt - F| / |F|`` and the mean per-position cosine) for every scorer
and keep ratio, and recommends the cheapest setting within ``--max-drift``::

    python tools/analysis/calibrate_thresholds.py data/toy_coco/val2017 \
        --config configs/toy/toy_eva02_det.py \
        --checkpoint work_dirs/toy_eva02_det/iter_300.pth --canvas 256 \
        --scorers entropy gradient --keep-ratios 0.5 0.6 0.7 0.8 \
        --max-drift 0.2

It also prints the keep ratio of the reference itself and, per scale, the
quantiles of the candidate patches' scores, to see where thresholds bite.
Entropy thresholds above ~6 bits cost accuracy in the paper that
fine-tuning did not recover: the tool warns when the answer goes there.
Unreadable files of a folder are skipped with a warning; progress goes to
stderr, so ``--json`` output stays clean.
"""
import argparse
import json
import sys
from typing import Optional

from mmapt.apis import ImageReadError
from mmapt.apis.tool_args import (add_entropy_bins_argument,
                                  add_image_view_arguments, add_json_argument,
                                  add_patch_arguments)
from mmapt.benchmark.calibration import (DRIFT_KEEP_RATIOS, MAX_SAFE_THRESHOLD,
                                         print_report)
from mmapt.benchmark.calibration_run import calibrate_folder
from mmapt.engine.checkpoint import add_trust_argument
from mmapt.engine.preflight import InputError, check_writable_file


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_image_view_arguments(parser)
    add_patch_arguments(parser, thresholds=False)
    parser.add_argument(
        '--reference',
        type=float,
        nargs='+',
        help='threshold vector whose shape is kept (default: 2 2 0.3 for '
        'entropy with 4 patch sizes, equal thresholds otherwise)')
    parser.add_argument(
        '--target-keep',
        type=float,
        help='wanted mean keep ratio in (0, 1]: thresholds are searched '
        'for it')
    parser.add_argument(
        '--scorers',
        nargs='+',
        default=['entropy'],
        help='patch scorers to calibrate (mmapt.registry.PATCH_SCORERS): '
        'entropy (default), contrast, gradient')
    parser.add_argument(
        '--keep-ratios',
        type=float,
        nargs='+',
        help='budget-mode settings to compare (every image keeps this '
        'fraction of the plain grid\'s tokens)')
    parser.add_argument(
        '--plot', help='PNG of the keep-ratio distribution per setting')
    drift = parser.add_argument_group('feature drift (a trained model)')
    drift.add_argument('--config', help='config of the plain (or APT) model')
    drift.add_argument(
        '--checkpoint',
        help='trained checkpoint of that model (a converted '
        'or trained plain model; only the backbone is read)')
    drift.add_argument(
        '--max-drift',
        type=float,
        default=0.2,
        help='largest mean relative feature error to accept (default 0.2)')
    add_trust_argument(drift)
    add_entropy_bins_argument(parser)
    add_json_argument(parser)
    return parser.parse_args(argv)


# ------------------------------------------------------------------- main
def check_args(args) -> Optional[str]:
    if args.target_keep is not None and not 0 < args.target_keep <= 1:
        return '--target-keep must be in (0, 1]'
    for ratio in args.keep_ratios or ():
        if not 0 < ratio <= 1:
            return f'--keep-ratios must be in (0, 1], got {ratio}'
    if (args.config is None) != (args.checkpoint is None):
        return '--config and --checkpoint go together (feature drift mode)'
    if args.target_keep is None and not args.keep_ratios and \
            args.checkpoint is None:
        return ('give --target-keep (threshold search), --keep-ratios '
                '(budget settings) or --config/--checkpoint (feature drift)')
    if args.max_drift <= 0:
        return '--max-drift must be positive'
    if 'importance' in args.scorers:
        return ('the importance scorer needs a map per image, which this tool '
                'does not read; calibrate its base scorer instead')
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_args(args)
    if problem is None and args.plot:
        try:
            check_writable_file(args.plot, '--plot')
        except InputError as err:
            problem = str(err)
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2
    if args.checkpoint is not None and args.keep_ratios is None:
        args.keep_ratios = list(DRIFT_KEEP_RATIOS)
    try:
        result, first, folder = calibrate_folder(args)
    except (ValueError, RuntimeError, FileNotFoundError,
            ImageReadError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1 if isinstance(err, ImageReadError) else 2
    if folder.skipped:
        print(f'warning: {folder.summary()}', file=sys.stderr)
    name = result['scorer']
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result, first)
    thresholds = result.get('thresholds')
    if name == 'entropy' and thresholds and \
            max(thresholds) > MAX_SAFE_THRESHOLD:
        print(
            f'warning: a threshold above {MAX_SAFE_THRESHOLD} bits; the '
            'paper saw accuracy fall sharply there, fine-tuning did not '
            'recover it',
            file=sys.stderr)
    if args.checkpoint is not None and result['recommended'] is None:
        print(
            f'warning: no setting stays within --max-drift '
            f'{args.max_drift}; try higher keep ratios',
            file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
