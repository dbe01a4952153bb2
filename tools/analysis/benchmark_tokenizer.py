"""Time and peak extra memory of the APT tokenizer on one batch.

    python tools/analysis/benchmark_tokenizer.py --batch 2 --size 1536 \
        --patch-sizes 16 32 64 128 --thresholds 2 2 0.3 --window-size 32

Peak extra memory: on CUDA, ``max_memory_allocated`` above what the input
holds; on CPU, the highest resident set size sampled every 0.5 ms from
/proc/self/statm during the call, minus the value just before it, in a fresh
child process per setting (torch releases the GIL inside its kernels, so the
sampling thread runs while they allocate).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from mmapt.tokenizer import PatchTokenizer, images_to_gray, patch_entropy
from mmapt.utils.memory import peak_memory_mib


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--size', type=int, default=1536)
    parser.add_argument(
        '--patch-sizes', type=int, nargs='+', default=[16, 32, 64, 128])
    parser.add_argument(
        '--thresholds', type=float, nargs='*', default=[2.0, 2.0, 0.3])
    parser.add_argument('--bins', type=int, default=512)
    parser.add_argument('--window-size', type=int, default=None)
    parser.add_argument('--repeat', type=int, default=5)
    parser.add_argument('--device', default='cpu')
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


def measure_memory(args) -> float:
    """Peak extra MiB of one call, in this (fresh) process."""
    tokenizer = PatchTokenizer(
        args.patch_sizes[0],
        args.thresholds,
        args.bins,
        window_size=args.window_size,
        patch_sizes=args.patch_sizes)
    images = make_images(args)
    if args.measure == 'memory-entropy':
        gray = images_to_gray(images[:1], tokenizer.mean, tokenizer.std)

        def call():
            return patch_entropy(gray, args.patch_sizes[1], args.bins)

    else:
        call = lambda: tokenizer(images)  # noqa
    return peak_memory_mib(call, images.device)


def child(args, mode: str) -> float:
    cmd = [
        sys.executable, __file__, '--measure', mode, '--batch',
        str(args.batch), '--size',
        str(args.size), '--bins',
        str(args.bins), '--device', args.device, '--patch-sizes',
        *map(str, args.patch_sizes), '--thresholds',
        *map(str, args.thresholds)
    ]
    if args.window_size:
        cmd += ['--window-size', str(args.window_size)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.measure:
        print(measure_memory(args))
        return
    tokenizer = PatchTokenizer(
        args.patch_sizes[0],
        args.thresholds,
        args.bins,
        window_size=args.window_size,
        patch_sizes=args.patch_sizes)
    images = make_images(args)
    tokenizer(images)  # warm-up
    times = []
    for _ in range(args.repeat):
        if images.is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        layout = tokenizer(images)
        if images.is_cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
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
