"""Calibrate APT entropy thresholds for a target token budget on your images.

Entropy maps are computed once per image; every candidate setting then only
re-runs the (cheap) quadtree selection. The search keeps the *shape* of a
reference threshold vector (the paper's detection setting by default) and
scales it until the mean keep ratio over the images meets the target::

    python tools/analysis/calibrate_thresholds.py data/photos --canvas 1536 \
        --patch-sizes 16 32 64 128 --reference 2 2 0.3 --target-keep 0.7

It also prints the keep ratio of the reference itself and, per scale, the
entropy quantiles of the candidate patches, to see where thresholds bite.
Thresholds above ~6 bits cost accuracy in the paper that fine-tuning did not
recover: the tool warns when the answer goes there.
"""
import argparse
import json
import statistics
import sys
from typing import List, Sequence

import numpy as np
import torch

from mmapt.tokenizer import build_layout, select_patches
from mmapt.tokenizer.image_folder import ImageFolder, ImageReadError
from mmapt.tokenizer.prepare import (add_entropy_bins_argument, normalise,
                                     prepare_view, tokenizer_and_images)

MAX_SAFE_THRESHOLD = 6.0


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('path', help='an image file or a folder of images')
    view = parser.add_mutually_exclusive_group()
    view.add_argument(
        '--canvas', type=int, help='detection view (pad to N x N)')
    view.add_argument(
        '--crop', type=int, help='segmentation view (crop N x N)')
    parser.add_argument(
        '--patch-sizes', type=int, nargs='+', default=[16, 32, 64, 128])
    parser.add_argument(
        '--reference',
        type=float,
        nargs='+',
        default=[2.0, 2.0, 0.3],
        help='threshold vector whose shape is kept')
    parser.add_argument(
        '--target-keep',
        type=float,
        required=True,
        help='wanted mean keep ratio, in (0, 1]')
    add_entropy_bins_argument(parser)
    parser.add_argument('--json', action='store_true')
    return parser.parse_args(argv)


def keep_ratios(entropies: Sequence[List[torch.Tensor]], thresholds,
                grid) -> List[float]:
    """Keep ratio per image for one threshold setting."""
    ratios = []
    for maps in entropies:
        masks = select_patches(maps, thresholds, grid)
        layout = build_layout(masks, grid)
        ratios.append(float(layout.keep_ratio[0]))
    return ratios


def calibrate(entropies,
              reference: Sequence[float],
              grid,
              target: float,
              steps: int = 40):
    """Largest-keep scale factor s with mean keep(s * reference) <= target.

    More merging can only lower the token count, so the mean keep ratio is
    non-increasing in s and a bisection finds the boundary.
    """

    def mean_keep(scale: float) -> float:
        return statistics.mean(
            keep_ratios(entropies, [scale * t for t in reference], grid))

    low, high = 0.0, 1.0
    while mean_keep(high) > target:
        high *= 2
        if high > 1e4:
            raise ValueError(f'keep ratio {target} is out of reach: even '
                             f'thresholds x{high:g} keep more tokens')
    for _ in range(steps):
        mid = (low + high) / 2
        if mean_keep(mid) > target:
            low = mid
        else:
            high = mid
    return high, mean_keep(high)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 < args.target_keep <= 1:
        print('error: --target-keep must be in (0, 1]', file=sys.stderr)
        return 2
    try:
        tokenizer, files = tokenizer_and_images(args.path, args.patch_sizes,
                                                args.reference,
                                                args.entropy_bins)
    except (ValueError, FileNotFoundError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    if any(t <= 0 for t in args.reference):
        print(
            'error: --reference thresholds must be positive to be scaled',
            file=sys.stderr)
        return 2

    entropies, grid = [], None
    folder = ImageFolder(args.path, desc='calibrate_thresholds')
    for _, image in folder:
        batch = normalise([
            prepare_view(image, args.canvas, args.crop,
                         tokenizer.largest_patch)
        ])
        tokenizer.check_input_size(*batch.shape[-2:])
        grid = (batch.shape[-2] // tokenizer.patch_size,
                batch.shape[-1] // tokenizer.patch_size)
        entropies.append(tokenizer.entropy_maps(batch))
    try:
        folder.check_some_read()
    except ImageReadError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    if folder.skipped:
        print(f'warning: {folder.summary()}', file=sys.stderr)

    reference_keep = statistics.mean(
        keep_ratios(entropies, args.reference, grid))
    scale, achieved = calibrate(entropies, args.reference, grid,
                                args.target_keep)
    thresholds = [round(scale * t, 4) for t in args.reference]
    quantiles = {}
    for i, size in enumerate(tokenizer.patch_sizes[1:]):
        values = torch.cat([maps[i].flatten() for maps in entropies]).numpy()
        quantiles[size] = [
            round(float(q), 3)
            for q in np.quantile(values, [0.1, 0.25, 0.5, 0.75, 0.9])
        ]
    result = dict(
        images=len(folder.read),
        skipped=[path for path, _ in folder.skipped],
        patch_sizes=list(tokenizer.patch_sizes),
        reference=list(args.reference),
        reference_keep=round(reference_keep, 4),
        target_keep=args.target_keep,
        thresholds=thresholds,
        achieved_keep=round(achieved, 4),
        entropy_quantiles_10_25_50_75_90=quantiles)
    if args.json:
        print(json.dumps(result))
    else:
        print(f'{len(folder.read)} images, patch sizes {tokenizer.patch_sizes}')
        print(f'reference thresholds {args.reference}: mean keep '
              f'{reference_keep:.3f}')
        print(f'thresholds {thresholds}: mean keep {achieved:.3f} '
              f'(target {args.target_keep})')
        for size, q in quantiles.items():
            print(f'  {size:>4}px entropy quantiles 10/25/50/75/90%: {q}')
    if max(thresholds) > MAX_SAFE_THRESHOLD:
        print(
            f'warning: a threshold above {MAX_SAFE_THRESHOLD} bits; the '
            'paper saw accuracy fall sharply there, fine-tuning did not '
            'recover it',
            file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
