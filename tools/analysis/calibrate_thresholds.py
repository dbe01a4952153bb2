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
import statistics
import sys
from typing import Dict, List, Optional

from mmapt.apis import ImageReadError
from mmapt.apis.image_folder import ImageFolder
from mmapt.apis.tool_args import (add_entropy_bins_argument,
                                  add_image_view_arguments, add_json_argument,
                                  add_patch_arguments, tokenizer_and_images)
from mmapt.apis.views import normalise, prepare_view
from mmapt.benchmark.calibration import (DRIFT_KEEP_RATIOS, MAX_SAFE_THRESHOLD,
                                         keep_ratios, measure_drift,
                                         plot_keep_ratios, print_report,
                                         quantiles, recommend, reference_for,
                                         sweep_settings, without_per_image)
from mmapt.engine.checkpoint import add_trust_argument
from mmapt.engine.preflight import InputError, check_writable_file
from mmapt.tokenizer import PatchTokenizer


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
    num_thresholds = len(args.patch_sizes) - 1
    tokenizers: Dict[str, PatchTokenizer] = {}
    references: Dict[str, List[float]] = {}
    try:
        for scorer in args.scorers:
            references[scorer] = reference_for(scorer, num_thresholds,
                                               args.reference)
            tokenizers[scorer], _ = tokenizer_and_images(
                args.path,
                args.patch_sizes,
                references[scorer],
                args.entropy_bins,
                scorer=scorer)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if args.target_keep is not None and any(t <= 0
                                            for ref in references.values()
                                            for t in ref):
        print(
            'error: --reference thresholds must be positive to be scaled',
            file=sys.stderr)
        return 2
    first = tokenizers[args.scorers[0]]

    scores = {name: [] for name in args.scorers}
    grids, views = [], []
    folder = ImageFolder(args.path, desc='calibrate_thresholds')
    try:
        for _, image in folder:
            view = prepare_view(image, args.canvas, args.crop,
                                first.largest_patch)
            batch = normalise([view])
            first.check_input_size(*batch.shape[-2:])
            grids.append(first.grid_size(*batch.shape[-2:]))
            for name, tokenizer in tokenizers.items():
                scores[name].append(tokenizer.score_maps(batch))
            if args.checkpoint is not None:
                views.append(view)
        folder.check_some_read()
    except (ValueError, ImageReadError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 1 if isinstance(err, ImageReadError) else 2
    if folder.skipped:
        print(f'warning: {folder.summary()}', file=sys.stderr)

    result = dict(
        images=len(folder.read),
        skipped=[path for path, _ in folder.skipped],
        patch_sizes=list(first.patch_sizes))
    try:
        settings = sweep_settings(scores, references, grids, first.patch_size,
                                  args.target_keep, args.keep_ratios or (),
                                  args.entropy_bins)
        if args.checkpoint is not None:
            measure_drift(args.config, args.checkpoint, views, settings,
                          first.patch_sizes, args.trust_checkpoint)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2

    # The first scorer's threshold search: the tool's original answer.
    name = args.scorers[0]
    result.update(
        scorer=name,
        reference=references[name],
        reference_keep=round(
            statistics.mean(
                keep_ratios(scores[name], references[name], grids)), 4))
    if args.target_keep is not None:
        search = settings[0]
        result.update(
            target_keep=args.target_keep,
            thresholds=search['thresholds'],
            achieved_keep=search['keep_mean'])
    result['score_quantiles_10_25_50_75_90'] = {
        name: quantiles(scores[name], first.patch_sizes)
        for name in args.scorers
    }
    result['entropy_quantiles_10_25_50_75_90'] = \
        result['score_quantiles_10_25_50_75_90'].get('entropy')
    result['settings'] = [without_per_image(s) for s in settings]
    if args.checkpoint is not None:
        best = recommend(settings, args.max_drift)
        result['max_drift'] = args.max_drift
        result['recommended'] = None if best is None else \
            without_per_image(best)
    if args.plot and settings:
        try:
            plot_keep_ratios(settings, args.plot)
        except RuntimeError as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
        result['plot'] = args.plot
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
