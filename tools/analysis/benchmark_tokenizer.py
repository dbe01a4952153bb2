"""Time and peak extra memory of the APT tokenizer on one batch.

    python tools/analysis/benchmark_tokenizer.py --batch 2 --size 1536 \
        --patch-sizes 16 32 64 128 --thresholds 2 2 0.3 --window-size 32

Peak extra memory: on CUDA, ``max_memory_allocated`` above what the input
holds; on CPU, the highest resident set size sampled every 0.5 ms from
/proc/self/statm during the call, minus the value just before it, in a fresh
child process per setting (torch releases the GIL inside its kernels, so the
sampling thread runs while they allocate).

Scorers and budget mode: ``--scorer gradient`` (``importance`` runs with a
random smooth map), ``--token-budget N`` or
``--keep-ratio R`` (and ``--threshold-floor``). ``--compare-budget`` times
threshold mode and budget mode interleaved in this process (A, B, A, B, ...)
at the same mean token count (the budget is the threshold layouts' mean
unless given) and prints the median of each and their ratio, for the whole
tokenizer call and for the selection step alone (same score maps)::

    python tools/analysis/benchmark_tokenizer.py --batch 2 --size 1536 \
        --window-size 32 --compare-budget --repeat 15
"""
import argparse
import json
import subprocess
import sys

import torch

from mmapt.apis.tool_args import add_patch_arguments, add_scorer_arguments
from mmapt.benchmark.tokenizer_bench import (compare_budget, make_images,
                                             measure_memory, time_tokenizer)
from mmapt.engine.precision import add_device_argument


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=1536)
    add_patch_arguments(parser)
    parser.add_argument(
        '--window-size', type=int, default=0, help='0: no windows')
    parser.add_argument('--repeat', type=int, default=5)
    add_device_argument(parser)
    add_scorer_arguments(parser)
    parser.add_argument(
        '--compare-budget',
        action='store_true',
        help='time threshold vs budget mode, interleaved')
    parser.add_argument(
        '--measure',
        choices=['time', 'memory-entropy', 'memory-tokenizer'],
        help=argparse.SUPPRESS)  # child-process mode
    return parser.parse_args(argv)


def child(args, mode: str) -> float:
    cmd = [
        sys.executable, __file__, '--measure', mode, '--batch',
        str(args.batch), '--size',
        str(args.size), '--entropy-bins',
        str(args.entropy_bins), '--device', args.device, '--patch-sizes',
        *map(str, args.patch_sizes), '--thresholds',
        *map(str, args.thresholds)
    ]
    if args.window_size:
        cmd += ['--window-size', str(args.window_size)]
    cmd += ['--scorer', args.scorer]
    if args.token_budget is not None:
        cmd += ['--token-budget', str(args.token_budget)]
    if args.keep_ratio is not None:
        cmd += ['--keep-ratio', str(args.keep_ratio)]
    if args.threshold_floor:
        cmd += ['--threshold-floor']
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(measure_memory(args))
        return
    images = make_images(args)
    if args.compare_budget:
        result = dict(
            batch=args.batch,
            size=args.size,
            device=args.device,
            threads=torch.get_num_threads(),
            repeat=args.repeat)
        result.update(compare_budget(args, images))
        print(json.dumps(result))
        return
    result = dict(
        batch=args.batch,
        size=args.size,
        device=args.device,
        threads=torch.get_num_threads())
    result.update(time_tokenizer(args, images))
    result.update(
        entropy_one_image_peak_mib=round(child(args, 'memory-entropy'), 1),
        tokenizer_batch_peak_mib=round(child(args, 'memory-tokenizer'), 1),
        input_mib=round(images.numel() * 4 / 2**20, 1))
    print(json.dumps(result))


if __name__ == '__main__':
    main()
