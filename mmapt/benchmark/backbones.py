"""Backbone pairs, input views and per-forward counts for the benchmarks.

Needs torch, numpy and mmapt's backbones only (no mmcv / mmdet / mmseg):
the GPU benchmark imports it on a machine with torch and timm.
"""
import os
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch import nn

from mmapt.apis.views import canvas_content_size, normalise, to_canvas
from mmapt.benchmark.overhead import count_overhead
from mmapt.models.backbones import count_tokens
from mmapt.models.layers.attention import count_attention_calls


def build_backbone_pair(plain_cls: type,
                        apt_cls: type,
                        cfg: dict,
                        thresholds: Tuple[float, ...],
                        device: torch.device,
                        seed: int = 0) -> Tuple[nn.Module, nn.Module]:
    """``(plain, apt)`` backbones in eval mode holding the same random
    weights.

    APT's own layers stay random, its ZeroLinear included (drawn like a
    trained one, not zero), so merged tokens cost what they cost after
    fine-tuning.
    """
    torch.manual_seed(seed)
    plain = plain_cls(**cfg)
    apt = apt_cls(thresholds=tuple(thresholds), **cfg)
    result = apt.load_state_dict(plain.state_dict(), strict=False)
    extra = [k for k in result.missing_keys if not k.startswith('apt_embed.')]
    if extra or result.unexpected_keys:
        raise RuntimeError(f'plain and APT weights differ: {extra[:5]} '
                           f'{result.unexpected_keys[:5]}')
    with torch.no_grad():
        apt.apt_embed.zero_linear.weight.normal_(std=0.02)
    return plain.to(device).eval(), apt.to(device).eval()


def same_weights_copy(source: nn.Module, cls: type, cfg: dict,
                      **kwargs) -> nn.Module:
    """Another backbone of ``cls`` holding ``source``'s weights (e.g. APT
    with nothing merged beside the APT arm)."""
    model = cls(**cfg, **kwargs)
    model.load_state_dict(source.state_dict())
    device = next(source.parameters()).device
    return model.to(device).train(source.training)


def crop_to_multiple(canvas: np.ndarray, height: int, width: int,
                     multiple: int) -> np.ndarray:
    """The top-left ``height x width`` content of a canvas, padded only to
    the next ``multiple`` (the canvas's own padding pixels)."""
    return np.ascontiguousarray(
        canvas[:-(-height // multiple) * multiple, :-(-width // multiple) *
               multiple])


def photo_views(image: np.ndarray, canvas: int, window_px: int,
                largest_patch: int) -> dict:
    """One photograph prepared like the detection test pipeline: the square
    canvas, the content padded to the window (``window``) and to the
    largest patch (``nopad``), each a normalised (1, 3, H, W) batch."""
    square = to_canvas(image, canvas)
    height, width = canvas_content_size(*image.shape[:2], canvas)
    return dict(
        size=[int(image.shape[0]), int(image.shape[1])],
        content=[height, width],
        square=normalise([square]),
        window=normalise([crop_to_multiple(square, height, width, window_px)]),
        nopad=normalise(
            [crop_to_multiple(square, height, width, largest_patch)]))


def generated_photos(num: int, canvas: int) -> Dict[str, np.ndarray]:
    """Photo-like stand-ins on the square canvas: smooth shading, textured
    objects, a flat sky band (deterministic)."""
    rng = np.random.default_rng(0)
    images = {}
    for i in range(num):
        height = int(rng.integers(400, 640))
        width = int(rng.integers(480, 640))
        coarse = rng.uniform(0, 255, (4, 5, 3))
        rows = np.linspace(0, 3, height)[:, None]
        cols = np.linspace(0, 4, width)[None, :]
        r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
        r1, c1 = np.minimum(r0 + 1, 3), np.minimum(c0 + 1, 4)
        fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
        image = (
            coarse[r0, c0] * (1 - fr) * (1 - fc) + coarse[r1, c0] * fr *
            (1 - fc) + coarse[r0, c1] * (1 - fr) * fc +
            coarse[r1, c1] * fr * fc)
        for _ in range(4):  # textured objects
            h, w = int(rng.integers(60, 220)), int(rng.integers(60, 220))
            top = int(rng.integers(0, height - h))
            left = int(rng.integers(0, width - w))
            image[top:top + h, left:left + w] += rng.normal(0, 40, (h, w, 3))
        image[:height // 5] = rng.uniform(0, 255, 3)  # a flat sky band
        images[f'generated_{i}'] = to_canvas(
            np.clip(image, 0, 255).astype(np.uint8), canvas)
    return images


def image_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def forward_tokens(backbone: nn.Module,
                   call: Callable[[], object]) -> Tuple[int, int]:
    """``(tokens, square-model tokens)`` of one call of ``backbone``."""
    with torch.no_grad(), count_tokens(backbone) as counter:
        call()
    counts = counter.per_image()
    return int(counts['tokens'].sum()), int(counts['baseline_tokens'].sum())


# ------------------------------------------------------------ overhead
def count_forward_overhead(backbone: nn.Module, x: torch.Tensor) -> dict:
    """Aten ops and host syncs of one forward, per stage (a dict:
    ``ops``, ``syncs``, ``sync_sites``, ``total_ops``, ``total_syncs``,
    ``outside_blocks``)."""
    with torch.no_grad():
        return count_overhead(
            lambda: backbone(x), device=x.device, model=backbone).as_dict()


def padded_attention_scope(model: nn.Module):
    """A context forcing ``model``'s padded SDPA attention plan on every
    device (to compare with or time against torch's varlen kernel)."""
    from mmapt.models.layers.attention import attention_backend
    return attention_backend(model, 'padded')


# ------------------------------------------------------------ static mode
@contextmanager
def packed_to(apt: nn.Module, pack_size: Optional[int]) -> Iterator[None]:
    """Run ``apt`` with its packed sequence padded to ``pack_size`` tokens
    (None: unpadded) inside the ``with`` block."""
    adapter = apt.apt
    saved = adapter.pack_size
    adapter.pack_size = pack_size
    try:
        yield
    finally:
        adapter.pack_size = saved


def static_arm(apt: nn.Module, batches: Dict[str, torch.Tensor],
               tokens: Dict[str, Tuple[int, int]], multiple: int) -> dict:
    """APT's static-shape mode as a benchmark arm, one bucket per image.

    Args:
        apt (nn.Module): The APT backbone.
        batches (dict[str, Tensor]): The images by name.
        tokens (dict[str, tuple[int, int]]): ``(tokens, square-model
            tokens)`` of each image (:func:`forward_tokens`).
        multiple (int): Buckets are the packed lengths (prefix tokens
            included) rounded up to a multiple of this, at most the square
            model's.

    Returns:
        dict: ``run(name)`` runs APT on that image padded to its bucket;
        ``pack_sizes`` per image; ``kernels``: the static attention calls
        per kernel name (``count_attention_calls``) of one warm-up forward
        of every image.
    """
    pack_sizes = {
        name:
        bucket_size(
            packed_tokens(apt, n), multiple, packed_tokens(apt, baseline))
        for name, (n, baseline) in tokens.items()
    }

    def run(name: str):
        with packed_to(apt, pack_sizes[name]):
            return apt(batches[name])

    kernels: Counter = Counter()
    with torch.no_grad():
        for name in batches:
            with count_attention_calls(apt) as calls:
                run(name)
            kernels.update({k: n for k, n in calls.items() if n})
    return dict(run=run, pack_sizes=pack_sizes, kernels=dict(kernels))


@contextmanager
def accelerated(backbone: nn.Module, mode: Optional[str]) -> Iterator[None]:
    """Run ``backbone`` with ``accelerate=mode`` inside the ``with`` block
    (its compiled forwards / graphs are kept across blocks)."""
    saved = backbone.accelerate
    backbone.accelerate = mode
    try:
        yield
    finally:
        backbone.accelerate = saved


def accelerated_arm(backbone: nn.Module, mode: str,
                    batches: Dict[str, torch.Tensor]) -> dict:
    """``backbone`` with ``accelerate=mode`` as a benchmark arm.

    Every image runs once first (untimed), so each shape key (APT: each
    token bucket) is compiled / captured before the timed runs.

    Returns:
        dict: ``run(name)`` runs the backbone on that image; ``build_s``:
        seconds of the first call of every key (compiling or capturing and
        one forward), summed; ``keys``: how many keys were made.
    """
    with torch.no_grad(), accelerated(backbone, mode):
        for x in batches.values():
            backbone(x)
    accelerator = backbone.accelerator(mode)

    def run(name: str):
        with accelerated(backbone, mode):
            return backbone(batches[name])

    return dict(
        run=run,
        build_s=round(sum(accelerator.build_seconds.values()), 1),
        keys=len(accelerator.build_seconds))


def bucket_size(packed_tokens: int,
                multiple: int,
                ceiling: Optional[int] = None) -> int:
    """``packed_tokens`` rounded up to a multiple of ``multiple`` (at most
    ``ceiling``, e.g. the square canvas's token count, when given and not
    smaller)."""
    if multiple < 1:
        raise ValueError(f'bucket multiple {multiple}: must be >= 1')
    size = -(-packed_tokens // multiple) * multiple
    if ceiling is not None and packed_tokens <= ceiling:
        size = min(size, ceiling)
    return size


def packed_tokens(apt: nn.Module, tokens: int, batch: int = 1) -> int:
    """Packed sequence length of a forward with ``tokens`` content tokens:
    the prefix (class / register) tokens of every image added."""
    return tokens + batch * int(getattr(apt, 'num_prefix_tokens', 0) or 0)


def stage_split(stages_ms: Dict[str, float]) -> Dict[str, float]:
    """Stage times with ``forward_ms`` (their sum) and ``tokenizer_share``
    (the tokenizer's fraction of the forward)."""
    total = sum(stages_ms.values())
    out = {k: round(v, 3) for k, v in stages_ms.items()}
    out['forward_ms'] = round(total, 3)
    out['tokenizer_share'] = round(stages_ms.get('tokenizer', 0.) /
                                   total, 4) if total else None
    return out
