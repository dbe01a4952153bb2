"""Evaluate one trained model under several APT settings, with the noise.

Every setting (a label and config overrides: scorer, keep ratio, token
budget, thresholds) is applied to the same trained checkpoint and run over
the test set in this one process; the metric (box / mask AP for mmdet
configs, mIoU for mmseg ones) comes with a paired bootstrap over the test
images: the same resampled image sets for all settings, so that the
difference between two settings has its own (smaller) confidence interval::

    python tools/analysis/scorer_eval.py configs/toy/toy_apt_det.py \
        work_dirs/toy_eva02_det/iter_300.pth \
        --setting none "model.backbone.thresholds=(-1,-1,-1)" \
        --setting entropy_k50 model.backbone.keep_ratio=0.5 \
        --setting gradient_k50 model.backbone.keep_ratio=0.5 \
            model.backbone.scorer=gradient \
        --reference entropy_k50 --bootstrap 1000 --out work_dirs/eval.json

The token counts per image come from the backbone's token observer (the
numbers ``TokenStatsHook`` logs). The special override ``importance=boxes``
(with ``model.backbone.scorer=dict(type='importance')``) gives every image
its ground-truth boxes as importance map: an oracle upper bound of what an
importance map can buy, not a deployable setting.

A ``learned`` scorer takes its weights from ``--scorer-checkpoint`` (every
setting with ``model.backbone.scorer=learned``); ``--drift`` also reports,
per setting, the relative feature drift of the backbone's output against
the plain layout with the same weights (``feature_drift``, %, per image,
bootstrapped like the metrics; lower is better, so its ``p_better`` is the
probability of *more* drift)::

    python tools/analysis/scorer_eval.py configs/toy/toy_apt_det.py \
        work_dirs/toy_eva02_det/iter_120.pth --drift \
        --scorer-checkpoint work_dirs/toy_learned_scorer_coco/iter_200.pth \
        --setting learned_k50 model.backbone.keep_ratio=0.5 \
            model.backbone.scorer=learned \
        --setting contrast_k50 model.backbone.keep_ratio=0.5 \
            model.backbone.scorer=contrast
"""
import argparse
import json
import os
import sys
import tempfile

from mmapt.apis.tool_args import add_scorer_checkpoint_argument
from mmapt.benchmark.scorer_eval import (bootstrap_report, build_runner,
                                         cached_batches, parse_overrides,
                                         print_table, run_settings)
from mmapt.engine.checkpoint import add_trust_argument
from mmapt.engine.preflight import InputError, check_writable_file


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', help='APT config (mmdet or mmseg)')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument(
        '--setting',
        nargs='+',
        action='append',
        required=True,
        metavar=('LABEL', 'KEY=VALUE'),
        help='a label and config overrides; repeat for every setting')
    parser.add_argument(
        '--reference',
        help='label whose metric the others are compared with (paired)')
    parser.add_argument('--bootstrap', type=int, default=1000)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--limit', type=int, help='only the first N test batches (smoke)')
    parser.add_argument('--out', help='write the full report as JSON')
    add_scorer_checkpoint_argument(parser)
    parser.add_argument(
        '--drift',
        action='store_true',
        help='also report the feature drift against the plain layout')
    add_trust_argument(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    labels = [s[0] for s in args.setting]
    if len(set(labels)) != len(labels):
        print('error: --setting labels must be unique', file=sys.stderr)
        return 2
    if args.reference and args.reference not in labels:
        print(
            f'error: --reference {args.reference} is not a setting label',
            file=sys.stderr)
        return 2
    if args.out:
        try:
            check_writable_file(args.out, '--out')
        except InputError as err:
            print(f'error: {err}', file=sys.stderr)
            return 2
    try:
        overrides = {s[0]: parse_overrides(s[1:]) for s in args.setting}
        if args.scorer_checkpoint:
            from mmapt.tokenizer.learned_scorer import with_checkpoint
            for options in overrides.values():
                key = 'model.backbone.scorer'
                if key in options:
                    options[key] = with_checkpoint(options[key],
                                                   args.scorer_checkpoint)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    from mmapt.checkpoints.checkpoint_file import (CheckpointFileError,
                                                   load_checkpoint_file)
    try:  # before any slow work: the file is whole and loads safely
        load_checkpoint_file(
            args.checkpoint, trust=args.trust_checkpoint, mmap=True)
    except CheckpointFileError as err:
        print(f'error: checkpoint {err}', file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work_dir:
        cfg, runner = build_runner(args.config, work_dir)
        scope = cfg.get('default_scope', 'mmdet')
        batches = cached_batches(runner, args.limit)
        runs = run_settings(runner, cfg, overrides, args.checkpoint, batches,
                            args.trust_checkpoint, args.drift)
    report = dict(
        config=args.config,
        checkpoint=args.checkpoint,
        **bootstrap_report(runs, overrides, scope, args.bootstrap, args.seed,
                           args.reference))
    print_table(report, args.reference)
    if args.out:  # checked writable above; its folder may not exist yet
        os.makedirs(os.path.dirname(args.out) or '.', exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(report, f, indent=1)
        print(f'saved {args.out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
