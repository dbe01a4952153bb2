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
being averaged away.

With ``prior='contrast'`` (the default) the network also reads the
hand-made per-patch scores, the gray-level standard deviation (the
``contrast`` scorer) and the mean neighbour difference (the ``gradient``
scorer: fine texture), of every base cell (into the context conv) and of
every scored patch (into its head), and predicts a correction on top of
contrast::

    log_drift_s = a_s * log(1 + contrast_s) + b_s + head_s(...)

with ``a_s = 1``, ``b_s = -4`` (a drift of a few percent for a contrast of
about 1 gray level: a start near the targets' range; one offset for all
sizes, so it changes no ranking) and the head's last layer at zero before
training, so an untrained network ranks patches exactly like ``contrast``
and training only has to learn where contrast is wrong. ``prior=None`` is
the gray-image-only network (checkpoints from before the option load
with it).

At 1536 x 1536 this is about 0.6 GMAC, a fraction of a percent of a ViT-B
forward. Torch only (no host reads, no data-dependent shapes): it runs
unchanged in the static forward and compiles with ``fullgraph=True``.
"""
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmapt.choices import check_choice
from .scorers import ContrastScorer, GradientScorer

#: ScorerNet's ``prior`` choices (None: the gray image only).
PRIORS = (None, 'contrast')
#: A tensor every ScorerNet has, whatever its options: how a checkpoint's
#: copies of the network are found.
ANCHOR_KEY = 'trunk.0.weight'
#: The initial ``b_s`` of the contrast prior (module docstring).
PRIOR_OFFSET = -4.0
#: A tensor only the contrast-prior network has: how a checkpoint says
#: which network it holds.
PRIOR_KEY = 'prior_scale'


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1), nn.GELU())


def hand_features(gray: Tensor, sizes: Sequence[int]) -> List[Tensor]:
    """One (B, 2, H // s, W // s) map per size ``s``: ``log(1 + contrast)``
    and ``log(1 + gradient)`` of each patch (the hand-made scorers; the
    entropy scorer's histograms would not compile without graph breaks)."""
    contrast = ContrastScorer().score(gray, sizes)
    gradient = GradientScorer().score(gray, sizes)
    return [
        torch.stack([c.log1p(), g.log1p()], dim=1)
        for c, g in zip(contrast, gradient)
    ]


def checkpoint_prior(state: Mapping[str, Any], prefix: str) -> Optional[str]:
    """The ``prior`` of the ScorerNet saved under ``prefix`` in ``state``."""
    return 'contrast' if prefix + PRIOR_KEY in state else None


class ScorerNet(nn.Module):
    """Predicts the log feature drift of merging each candidate patch.

    Args:
        patch_sizes (Sequence[int]): The patch sides (pixels) it scores: the
            APT patch sizes above the base one, e.g. (32, 64, 128).
        cell_size (int): The base patch side in pixels (one trunk feature
            per base cell). Must be 16: the trunk downsamples by 16.
        channels (int): Trunk width. Defaults to 32.
        prior (str, optional): ``'contrast'`` (default): also read the
            hand-made contrast and gradient scores of every cell and patch,
            and predict a learned correction of ``log(1 + contrast)`` that
            starts at zero (module docstring). None: the gray image only.
    """

    #: Space-to-depth factor of the stem, then two stride-2 convolutions.
    stem_factor = 4

    def __init__(self,
                 patch_sizes: Sequence[int] = (32, 64, 128),
                 cell_size: int = 16,
                 channels: int = 32,
                 prior: Optional[str] = 'contrast') -> None:
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
        check_choice('prior', prior, PRIORS)
        self.patch_sizes: Tuple[int, ...] = sizes
        self.cell_size = cell_size
        self.prior = prior
        hand = 2 if prior else 0  # log contrast and gradient per patch
        stem = self.stem_factor**2
        layers = [
            nn.Conv2d(stem, channels, 1),
            nn.GELU(),
            _conv(channels, channels, 2),
            _conv(channels, channels, 2)
        ]
        if prior:
            # The context conv also sees the cells' hand-made scores.
            self.context = _conv(channels + hand, channels)
        else:  # the original layout: keys trunk.0 ... trunk.4
            layers.append(_conv(channels, channels))
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(2 * channels + hand, channels, 1), nn.GELU(),
                nn.Conv2d(channels, 1, 1)) for _ in sizes)
        if prior:
            self.prior_scale = nn.Parameter(torch.ones(len(sizes)))
            self.prior_bias = nn.Parameter(
                torch.full((len(sizes), ), PRIOR_OFFSET))
            for head in self.heads:  # the correction starts at zero
                nn.init.zeros_(head[-1].weight)
                nn.init.zeros_(head[-1].bias)

    def check_patch_sizes(self, patch_sizes: Sequence[int]) -> None:
        """ValueError unless ``patch_sizes`` are the ones it was built for."""
        if tuple(patch_sizes) != self.patch_sizes:
            raise ValueError(
                f'the learned scorer was built for patch sizes '
                f'{self.patch_sizes} but is asked for {tuple(patch_sizes)}: '
                f'set scorer=dict(type=\'learned\', patch_sizes=...) to the '
                f'backbone\'s patch sizes above the base and train a scorer '
                f'for them (configs/toy/toy_learned_scorer_coco.py)')

    def prior_mismatch(self, state: Mapping[str, Any],
                       prefix: str) -> Optional[str]:
        """Why the network saved under ``prefix`` in ``state`` cannot load
        into this one because of ``prior``, or None when it matches."""
        saved = checkpoint_prior(state, prefix)
        if saved == self.prior:
            return None
        return (f'it holds a learned scorer trained with prior={saved!r} but '
                f'the scorer is built with prior={self.prior!r}: set '
                f'scorer=dict(type=\'learned\', prior={saved!r}, ...) to use '
                f'it, or train a scorer with prior={self.prior!r}')

    def features(self, gray: Tensor, hand: Optional[Tensor] = None) -> Tensor:
        """(B, H, W) gray levels -> (B, C, H / cell, W / cell); ``hand``:
        the cells' hand-made scores (B, 2, H / cell, W / cell), needed with
        a prior."""
        x = (gray.float().unsqueeze(1) - 127.5) / 64.0
        x = self.trunk(F.pixel_unshuffle(x, self.stem_factor))
        if self.prior:
            x = self.context(torch.cat([x, hand], dim=1))
        return x

    def forward(self, gray: Tensor) -> List[Tensor]:
        """(B, H, W) gray levels -> one (B, H // s, W // s) log-drift map
        per patch size ``s``."""
        return self.maps_and_corrections(gray)[0]

    def maps_and_corrections(
            self, gray: Tensor) -> Tuple[List[Tensor], List[Optional[Tensor]]]:
        """The log-drift maps of :meth:`forward` and, with a prior, the
        heads' corrections of it in them (None per size without one: the
        whole map is the head's)."""
        hand = [None] * (len(self.patch_sizes) + 1)
        if self.prior:
            hand = hand_features(gray.float(),
                                 (self.cell_size, ) + self.patch_sizes)
        feats = self.features(gray, hand[0])
        maps, corrections = [], []
        for i, (size, head) in enumerate(zip(self.patch_sizes, self.heads)):
            k = size // self.cell_size
            pooled = [F.avg_pool2d(feats, k), F.max_pool2d(feats, k)]
            if not self.prior:
                maps.append(head(torch.cat(pooled, dim=1))[:, 0])
                corrections.append(None)
                continue
            correction = head(torch.cat(pooled + [hand[i + 1]], dim=1))[:, 0]
            maps.append(self.prior_scale[i] * hand[i + 1][:, 0] +
                        self.prior_bias[i] + correction)
            corrections.append(correction)
        return maps, corrections
