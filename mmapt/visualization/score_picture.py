"""A patch scorer's map as a picture, to draw beside the patch layout.

numpy only (no cv2 / matplotlib): ``tools/analysis/visualize_patches.py``
and ``demo/image_demo.py`` draw the same pictures.
"""
from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

# Dark (no detail) to bright (much detail): the 'inferno' colour ramp,
# sampled at 6 points and interpolated linearly.
_RAMP = np.array([(0, 0, 4), (66, 10, 104), (147, 38, 103), (221, 81, 58),
                  (252, 165, 10), (252, 255, 164)],
                 dtype=np.float32)


def colourise(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> (..., 3) uint8 RGB on the ramp (NaN -> gray)."""
    finite = np.isfinite(values)
    x = np.clip(np.where(finite, values, 0), 0, 1) * (len(_RAMP) - 1)
    low = np.floor(x).astype(np.int64).clip(0, len(_RAMP) - 2)
    frac = (x - low)[..., None]
    rgb = _RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac
    rgb[~finite] = 128
    return rgb.round().astype(np.uint8)


def score_heatmap(scores: Tensor,
                  size: Tuple[int, int],
                  vmax: Optional[float] = None) -> Tuple[np.ndarray, float]:
    """One image's score map (rows, cols) as an RGB picture of ``size``
    (H, W), each patch a flat square (nearest upsampling).

    Scores are shown from 0 (or the map's minimum when it is negative, as
    with ``combine='add'`` importance) to ``vmax``, by default the map's
    99th percentile so that one extreme patch does not wash out the rest.

    Returns:
        tuple: the (H, W, 3) uint8 picture and the ``vmax`` used.
    """
    values = scores.detach().float().cpu().numpy()
    if values.ndim != 2:
        raise ValueError(f'one (rows, cols) score map is drawn at a time, '
                         f'got shape {values.shape}')
    low = min(0.0, float(np.nanmin(values))) if values.size else 0.0
    if vmax is None:
        vmax = float(np.nanpercentile(values, 99)) if values.size else 1.0
    span = vmax - low if vmax > low else 1.0
    picture = colourise((values - low) / span)
    height, width = size
    rows = np.minimum(
        np.arange(height) * values.shape[0] // max(height, 1),
        values.shape[0] - 1)
    cols = np.minimum(
        np.arange(width) * values.shape[1] // max(width, 1),
        values.shape[1] - 1)
    return np.ascontiguousarray(picture[rows][:, cols]), vmax


def score_caption(scorer, patch_size: int, vmax: float) -> str:
    unit = f' {scorer.unit}' if getattr(scorer, 'unit', '') else ''
    return (f'{scorer.name} score of {patch_size}px patches '
            f'(dark 0 .. bright {vmax:.3g}{unit})')


@torch.no_grad()
def tokenizer_score_picture(
        tokenizer,
        images: Tensor,
        size: Optional[Tuple[int, int]] = None,
        importance: Optional[Tensor] = None) -> Tuple[np.ndarray, str]:
    """The tokenizer's score map of the first image of ``images`` (normalised
    (B, 3, H, W)), drawn at ``size`` (default H x W), and its caption."""
    if tokenizer.num_scales < 2:
        raise ValueError('a score map needs at least two patch scales')
    maps = tokenizer.score_maps(images[:1], importance)
    index = 0  # the finest scale above the base: most decisions are there
    size = size or tuple(images.shape[-2:])
    picture, vmax = score_heatmap(maps[index][0], size)
    caption = score_caption(tokenizer.scorer, tokenizer.patch_sizes[index + 1],
                            vmax)
    return picture, caption
