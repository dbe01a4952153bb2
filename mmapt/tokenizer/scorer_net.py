"""ScorerNet: the small network behind the ``learned`` patch scorer.

Gray image (B, H, W) in [0, 255] -> one map per patch size above the base,
(B, H // size, W // size): the predicted *log* relative feature drift of
merging each patch (see :mod:`mmapt.models.distillers.scorer_distiller`,
which trains it). The trunk works at 1/4 resolution after a 4x4
space-to-depth (so pixel-level texture reaches it, not only the local
mean), then two stride-2 convolutions bring it to one feature vector per
base cell (1/16 for a 16-px base patch) with a 3x3 context conv on top.
Each patch size has its own head on the mean and the maximum of the cell
features under the patch: the maximum keeps a small detailed spot from
being averaged away. At 1536 x 1536 this is about 0.4 GMAC, a fraction of
a percent of a ViT-B forward.

Torch only (no host reads, no data-dependent shapes): it runs unchanged in
the static forward and compiles with ``fullgraph=True``.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.GELU())


class ScorerNet(nn.Module):
    """Predicts the log feature drift of merging each candidate patch.

    Args:
        patch_sizes (Sequence[int]): The patch sides (pixels) it scores: the
            APT patch sizes above the base one, e.g. (32, 64, 128).
        cell_size (int): The base patch side in pixels (one trunk feature
            per base cell). Must be 16: the trunk downsamples by 16.
        channels (int): Trunk width. Defaults to 32.
    """

    #: Space-to-depth factor of the stem, then two stride-2 convolutions.
    stem_factor = 4

    def __init__(self,
                 patch_sizes: Sequence[int] = (32, 64, 128),
                 cell_size: int = 16,
                 channels: int = 32) -> None:
        super().__init__()
        sizes = tuple(int(s) for s in patch_sizes)
        if cell_size != self.stem_factor * 4:
            raise ValueError(
                f'ScorerNet downsamples by {self.stem_factor * 4}: '
                f'cell_size must be {self.stem_factor * 4}, got {cell_size}')
        if not sizes or any(s <= cell_size or s % cell_size for s in sizes):
            raise ValueError(
                f'learned scorer patch_sizes must be multiples of the '
                f'{cell_size}-px base patch above it, e.g. (32, 64, 128); '
                f'got {sizes}')
        self.patch_sizes: Tuple[int, ...] = sizes
        self.cell_size = cell_size
        stem = self.stem_factor**2
        self.trunk = nn.Sequential(
            nn.Conv2d(stem, channels, 1), nn.GELU(),
            _conv(channels, channels, 2), _conv(channels, channels, 2),
            _conv(channels, channels))
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(2 * channels, channels, 1), nn.GELU(),
                nn.Conv2d(channels, 1, 1)) for _ in sizes)

    def check_patch_sizes(self, patch_sizes: Sequence[int]) -> None:
        """ValueError unless ``patch_sizes`` are the ones it was built for."""
        if tuple(patch_sizes) != self.patch_sizes:
            raise ValueError(
                f'the learned scorer was built for patch sizes '
                f'{self.patch_sizes} but is asked for {tuple(patch_sizes)}: '
                f'set scorer=dict(type=\'learned\', patch_sizes=...) to the '
                f'backbone\'s patch sizes above the base and train a scorer '
                f'for them (configs/toy/toy_learned_scorer_coco.py)')

    def features(self, gray: Tensor) -> Tensor:
        """(B, H, W) gray levels -> (B, C, H / cell, W / cell)."""
        x = (gray.float().unsqueeze(1) - 127.5) / 64.0
        x = F.pixel_unshuffle(x, self.stem_factor)
        return self.trunk(x)

    def forward(self, gray: Tensor) -> List[Tensor]:
        """(B, H, W) gray levels -> one (B, H // s, W // s) log-drift map
        per patch size ``s``."""
        feats = self.features(gray)
        maps = []
        for size, head in zip(self.patch_sizes, self.heads):
            k = size // self.cell_size
            pooled = torch.cat(
                [F.avg_pool2d(feats, k),
                 F.max_pool2d(feats, k)], dim=1)
            maps.append(head(pooled)[:, 0])
        return maps
