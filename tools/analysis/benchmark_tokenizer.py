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
import statistics
import subprocess
import sys
import time

import torch

from mmapt.apis.tool_args import (add_patch_arguments, add_scorer_arguments,
                                  scorer_arguments)
from mmapt.benchmark.memory import peak_memory_mib
from mmapt.engine.precision import add_device_argument
from mmapt.tokenizer import PatchTokenizer, images_to_gray, patch_entropy


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


def make_images(args) -> torch.Tensor:
    gen = torch.Generator(device=args.device).manual_seed(0)
    # Filled in place: no temporary raises the peak before the measurement.
    images = torch.empty(
        args.batch, 3, args.size, args.size, device=args.device)
    images.normal_(generator=gen)
    # Half of each image plain, so every scale takes part.
    images[:, :, :args.size // 2] = 0.3
    return images


def make_tokenizer(args, budget_mode: bool = True, **overrides):
    """The tokenizer of the command line (threshold mode when
    ``budget_mode`` is False)."""
    kwargs = dict(
        window_size=args.window_size,
        patch_sizes=args.patch_sizes,
        **scorer_arguments(args))
    if not budget_mode:
        kwargs.update(
            token_budget=None, keep_ratio=None, threshold_floor=False)
    kwargs.update(overrides)
    return PatchTokenizer(args.patch_sizes[0], args.thresholds,
                          args.entropy_bins, **kwargs)


def make_importance(args, images: torch.Tensor):
    """A random smooth importance map for the importance scorer, else
    None."""
    if args.scorer != 'importance':
        return None
    gen = torch.Generator(device=images.device).manual_seed(1)
    coarse = torch.rand(
        images.shape[0], 1, 8, 8, generator=gen, device=images.device)
    return torch.nn.functional.interpolate(
        coarse, images.shape[2:], mode='bilinear')[:, 0]


def measure_memory(args) -> float:
    """Peak extra MiB of one call, in this (fresh) process."""
    tokenizer = make_tokenizer(args)
    images = make_images(args)
    importance = make_importance(args, images)
    if args.measure == 'memory-entropy':
        gray = images_to_gray(images[:1], tokenizer.mean, tokenizer.std)

        def call():
            return patch_entropy(gray, args.patch_sizes[1], args.entropy_bins)

    else:
        call = lambda: tokenizer(images, importance)  # noqa
    return peak_memory_mib(call, images.device)


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


def timed(call, images: torch.Tensor) -> float:
    """Milliseconds of one call (synchronised on CUDA)."""
    if images.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    if images.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000


def compare_budget(args, images: torch.Tensor) -> dict:
    """Threshold vs budget mode at the same mean tokens, interleaved."""
    importance = make_importance(args, images)
    thresholds = make_tokenizer(args, budget_mode=False)
    reference = thresholds(images, importance)
    if args.token_budget is None and args.keep_ratio is None:
        budget = make_tokenizer(
            args,
            token_budget=int(reference.tokens_per_image.float().mean()),
            keep_ratio=None)
    else:
        budget = make_tokenizer(args)
    budget(images, importance)  # warm-up
    scores = thresholds.score_maps(images, importance)
    grid = reference.grid_size
    modes = dict(thresholds=thresholds, budget=budget)
    calls, selects = {m: [] for m in modes}, {m: [] for m in modes}
    for _ in range(args.repeat):
        for mode, tok in modes.items():
            calls[mode].append(
                timed(lambda tok=tok: tok(images, importance), images))
            selects[mode].append(
                timed(lambda tok=tok: tok.select(scores, grid), images))
    layout = budget(images, importance)
    call_ms = {m: statistics.median(v) for m, v in calls.items()}
    select_ms = {m: statistics.median(v) for m, v in selects.items()}
    return dict(
        threshold_tokens=reference.tokens_per_image.tolist(),
        budget_tokens=layout.tokens_per_image.tolist(),
        budget=repr(budget),
        threshold_ms=round(call_ms['thresholds'], 1),
        budget_ms=round(call_ms['budget'], 1),
        budget_over_threshold=round(call_ms['budget'] / call_ms['thresholds'],
                                    3),
        threshold_select_ms=round(select_ms['thresholds'], 2),
        budget_select_ms=round(select_ms['budget'], 2),
        select_budget_over_threshold=round(
            select_ms['budget'] / select_ms['thresholds'], 3))


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
    tokenizer = make_tokenizer(args)
    importance = make_importance(args, images)
    tokenizer(images, importance)  # warm-up
    times = [
        timed(lambda: tokenizer(images, importance), images)
        for _ in range(args.repeat)
    ]
    layout = tokenizer(images, importance)
    result = dict(
        batch=args.batch,
        size=args.size,
        device=args.device,
        threads=torch.get_num_threads(),
        tokenizer=repr(tokenizer),
        median_ms=round(statistics.median(times), 1),
        tokens=layout.num_tokens,
        entropy_one_image_peak_mib=round(child(args, 'memory-entropy'), 1),
        tokenizer_batch_peak_mib=round(child(args, 'memory-tokenizer'), 1),
        input_mib=round(images.numel() * 4 / 2**20, 1))
    print(json.dumps(result))


if __name__ == '__main__':
    main()
