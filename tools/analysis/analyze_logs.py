# Copyright (c) mmapt contributors. All rights reserved.
"""Curves and training time from the runner's JSON logs.

mmengine's ``LocalVisBackend`` writes one JSON object per logged step to
``WORK_DIR/<timestamp>/vis_data/scalars.json`` (and the same lines to
``vis_data/<timestamp>.json``): training records carry ``lr``, the losses,
``time`` and, with ``TokenStatsHook``, ``tokens`` / ``keep_ratio``;
validation records carry the metrics (``coco/bbox_mAP``, ``mIoU``, ...) and
the validation ``keep_ratio``. A LOG argument is such a file or a work dir
(its newest run is used).

Examples:
    python tools/analysis/analyze_logs.py plot_curve work_dirs/toy_apt_det \\
        --keys loss keep_ratio coco/bbox_mAP --out curves.png
    python tools/analysis/analyze_logs.py plot_curve A/scalars.json \\
        B/scalars.json --keys loss --legend apt plain --out loss.png
    python tools/analysis/analyze_logs.py cal_train_time work_dirs/toy_apt_det

A key is looked up in the training records first, then in the validation
records; ``val/KEY`` asks for the validation records (``val/keep_ratio``).
"""
import argparse
import sys

from mmapt.visualization.training_logs import (LogError, duration, find_log,
                                               plot_curve, train_time)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Curves (PNG) and training time from the runner\'s JSON '
        'logs (vis_data/scalars.json)')
    sub = parser.add_subparsers(dest='task', required=True)
    plot = sub.add_parser('plot_curve', help='plot keys of one or more logs')
    plot.add_argument(
        'logs', nargs='+', help='JSON logs or work dirs (newest run)')
    plot.add_argument(
        '--keys',
        nargs='+',
        default=['loss'],
        help='keys to plot, one panel each (e.g. loss keep_ratio '
        'coco/bbox_mAP mIoU val/keep_ratio); default: loss')
    plot.add_argument('--legend', nargs='+', help='one name per log')
    plot.add_argument('--title', help='title of the figure')
    plot.add_argument('--out', required=True, help='output PNG file')
    timing = sub.add_parser(
        'cal_train_time', help='time per iteration and in all')
    timing.add_argument(
        'logs', nargs='+', help='JSON logs or work dirs (newest run)')
    timing.add_argument(
        '--include-outliers',
        action='store_true',
        help='keep the first record (start-up) in the statistics')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.task == 'plot_curve':
            out = plot_curve(args.logs, args.keys, args.out, args.legend,
                             args.title)
            print(f'saved {out}')
            return 0
        for log in args.logs:
            t = train_time(find_log(log), args.include_outliers)
            print(f'-----Analyze train time of {t["log"]}-----')
            print(f'iterations logged up to {t["last_iter"]} '
                  f'({t["records"]} records)')
            print(f'time per iteration: mean {t["mean_s"]:.3f} s, std '
                  f'{t["std_s"]:.3f} s, data loading {t["data_mean_s"]:.3f} s')
            print(f'slowest record: iteration {t["slowest_iter"]} '
                  f'({t["slowest_s"]:.3f} s); fastest: iteration '
                  f'{t["fastest_iter"]} ({t["fastest_s"]:.3f} s)')
            print(f'estimated training time: {duration(t["est_total_s"])} '
                  f'for {t["last_iter"]} iterations')
        return 0
    except LogError as error:
        print(f'analyze_logs.py: {error}', file=sys.stderr)
        return 2


if __name__ == '__main__':
    sys.exit(main())
