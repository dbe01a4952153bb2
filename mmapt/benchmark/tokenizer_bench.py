"""The APT tokenizer's own benchmark
(``tools/analysis/benchmark_tokenizer.py``): time and peak extra memory of
one call, and threshold mode against budget mode at the same mean token
count, interleaved.

The functions read the tool's parsed command line (``args``: ``batch``,
``size``, ``device``, ``patch_sizes``, ``thresholds``, ``entropy_bins``,
``window_size``, ``repeat``, ``measure`` and the scorer options of
:func:`mmapt.apis.tool_args.add_scorer_arguments`).
"""
import statistics
from argparse import Namespace
from typing import Callable, Optional

import torch

from mmapt.apis.tool_args import scorer_arguments
from mmapt.benchmark.memory import peak_memory_mib
from mmapt.benchmark.timing import time_call
from mmapt.tokenizer import PatchTokenizer, images_to_gray, patch_entropy


def make_images(args: Namespace) -> torch.Tensor:
    gen = torch.Generator(device=args.device).manual_seed(0)
    # Filled in place: no temporary raises the peak before the measurement.
    images = torch.empty(
        args.batch, 3, args.size, args.size, device=args.device)
    images.normal_(generator=gen)
    # Half of each image plain, so every scale takes part.
    images[:, :, :args.size // 2] = 0.3
    return images


def make_tokenizer(args: Namespace,
                   budget_mode: bool = True,
                   **overrides) -> PatchTokenizer:
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


def make_importance(args: Namespace,
                    images: torch.Tensor) -> Optional[torch.Tensor]:
    """A random smooth importance map for the importance scorer, else
    None."""
    if args.scorer != 'importance':
        return None
    gen = torch.Generator(device=images.device).manual_seed(1)
    coarse = torch.rand(
        images.shape[0], 1, 8, 8, generator=gen, device=images.device)
    return torch.nn.functional.interpolate(
        coarse, images.shape[2:], mode='bilinear')[:, 0]


def measure_memory(args: Namespace) -> float:
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


def timed(call: Callable[[], object], images: torch.Tensor) -> float:
    """Milliseconds of one call (synchronised on CUDA)."""
    return time_call(call, images.device)[0]


def compare_budget(args: Namespace, images: torch.Tensor) -> dict:
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


def time_tokenizer(args: Namespace, images: torch.Tensor) -> dict:
    """Median milliseconds of ``args.repeat`` calls after a warm-up, with the
    tokenizer's description and its token count."""
    tokenizer = make_tokenizer(args)
    importance = make_importance(args, images)
    tokenizer(images, importance)  # warm-up
    times = [
        timed(lambda: tokenizer(images, importance), images)
        for _ in range(args.repeat)
    ]
    layout = tokenizer(images, importance)
    return dict(
        tokenizer=repr(tokenizer),
        median_ms=round(statistics.median(times), 1),
        tokens=layout.num_tokens)
