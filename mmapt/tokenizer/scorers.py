"""Patch scorers: how much detail every candidate patch holds.

A scorer turns gray images ``(B, H, W)`` in [0, 255] (and, for the
``importance`` scorer, one importance map per image) into one score map per
patch size, ``(B, H // size, W // size)``, the shapes of
:func:`~mmapt.tokenizer.entropy.entropy_maps`. Higher means more detail:
threshold mode (:func:`~mmapt.tokenizer.layout.select_patches`) merges a
patch whose score is below its scale's threshold, budget mode
(:func:`~mmapt.tokenizer.budget.budget_patches`) splits the highest-scoring
patches first. Every score is an *intensive* quantity (per pixel, not summed
over the patch), so scores of different patch sizes can be compared, which
budget mode does.

Registered in :data:`mmapt.registry.PATCH_SCORERS`:

* ``entropy`` (default): Shannon entropy of the gray-level histogram, bits.
  Counts distinct gray levels: any texture or noise scores high, a clean
  two-tone edge scores 1 bit.
* ``contrast``: standard deviation of the gray levels, i.e. the RMS error of
  painting the patch one flat gray; gray levels. Edges and large-amplitude
  structure score high, low-amplitude texture (sensor noise, grain, JPEG
  artefacts) low.
* ``gradient``: mean absolute difference of neighbouring pixels inside the
  patch (total variation per pixel pair); gray levels. Edges and fine
  structure, weighted by their contrast.
* ``importance``: any of the above, raised or lowered per patch by a
  per-image importance map (see :class:`ImportanceScorer` for the rule).
* ``learned``: a small network's prediction of how far merging the patch
  moves the backbone's features, trained without labels
  (:mod:`~mmapt.tokenizer.learned_scorer`).
"""
import math
import warnings
from typing import List, Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from mmapt.choices import check_choice
from mmapt.registry import PATCH_SCORERS
from .entropy import ENTROPY_BINS, entropy_maps


def scorer_names() -> List[str]:
    """Names of the registered scorers, sorted."""
    PATCH_SCORERS.import_from_location()
    return sorted(PATCH_SCORERS.module_dict)


def missing_importance() -> ValueError:
    """The error of an importance scorer called without maps."""
    return ValueError(
        'the importance scorer needs one importance map per image: pass '
        'importance= to the tokenizer or backbone, or set '
        'data_sample.importance_map in the pipeline and use '
        'APTDataPreprocessor (docs/tokenizer.md, "Per-image data")')


def check_importance(importance: Tensor,
                     batch: int,
                     height: int,
                     width: int,
                     finite: bool = True) -> Tensor:
    """Validate importance maps for ``batch`` images of ``height x width``.

    Args:
        importance (Tensor): (B, H, W) or (B, 1, H, W), any real values.
        finite (bool): Also reject NaN / inf (one host read on a GPU).

    Returns:
        Tensor: (B, H, W) float32 maps.
    """
    if not isinstance(importance, Tensor):
        raise ValueError(f'importance must be a (B, H, W) tensor, got '
                         f'{type(importance).__name__}')
    if importance.dim() == 4 and importance.shape[1] == 1:
        importance = importance[:, 0]
    if tuple(importance.shape) != (batch, height, width):
        raise ValueError(
            f'importance map of shape {tuple(importance.shape)} does not '
            f'match the images: expected ({batch}, {height}, {width}), one '
            f'map per image at the size of the (padded) image tensor')
    importance = importance.detach().float()
    if finite and not bool(torch.isfinite(importance).all()):
        raise ValueError('importance map contains NaN or inf values: give '
                         'finite values (e.g. 0 = neutral, 1 = important)')
    return importance


def _check_gray(gray: Tensor, patch_sizes: Sequence[int]) -> None:
    if gray.dim() != 3:
        raise ValueError(
            f'gray must have shape (B, H, W), got {tuple(gray.shape)}')
    height, width = gray.shape[1:]
    for size in patch_sizes:
        if height % size or width % size:
            raise ValueError(f'image size {height}x{width} is not divisible '
                             f'by the patch size {size}')


def _patches(gray: Tensor, size: int) -> Tensor:
    """(B, H, W) -> a (B, rows, size, cols, size) view of the patches."""
    batch, height, width = gray.shape
    return gray.view(batch, height // size, size, width // size, size)


class PatchScorer:
    """Base class of the patch scorers.

    Subclasses implement :meth:`score`; :meth:`__call__` validates the
    input. Scores are float32, finite, and at least :attr:`min_score`.
    """

    #: Lowest possible score: a threshold at or below it never merges.
    min_score: float = 0.0
    #: Unit of the scores, for tables and plots.
    unit: str = ''
    #: The weights of a learned scorer (an ``nn.Module`` the APT backbones
    #: register as ``apt_scorer``, so checkpoints carry it); None for the
    #: hand-made scorers.
    network = None

    @property
    def name(self) -> str:
        return getattr(self, '_registered_name', type(self).__name__)

    def score(self, gray: Tensor, patch_sizes: Sequence[int]) -> List[Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self,
                 gray: Tensor,
                 patch_sizes: Sequence[int],
                 importance: Optional[Tensor] = None) -> List[Tensor]:
        """Score maps, one (B, H // size, W // size) per patch size.

        Args:
            gray (Tensor): Gray levels in [0, 255], (B, H, W).
            patch_sizes (Sequence[int]): Patch sides in pixels.
            importance (Tensor, optional): Only the ``importance`` scorer
                takes one.
        """
        _check_gray(gray, patch_sizes)
        if importance is not None:
            raise ValueError(
                f'the {self.name!r} scorer takes no importance map; to use '
                f'one, wrap it: scorer=dict(type=\'importance\', '
                f'base=dict(type={self.name!r}))')
        return self.score(gray, patch_sizes)

    def __repr__(self) -> str:
        return f'{type(self).__name__}()'


@PATCH_SCORERS.register_module('entropy')
class EntropyScorer(PatchScorer):
    """Shannon entropy (bits) of each patch's gray-level histogram: APT's
    own score, :func:`~mmapt.tokenizer.entropy.entropy_maps`.

    Args:
        entropy_bins (int): Histogram bins over [0, 255]. Defaults to
            :data:`~mmapt.tokenizer.entropy.ENTROPY_BINS`.
        bins (int, optional): Deprecated name of ``entropy_bins``.
    """
    _registered_name = 'entropy'
    unit = 'bits'

    def __init__(self,
                 entropy_bins: int = ENTROPY_BINS,
                 bins: Optional[int] = None) -> None:
        if bins is not None:  # a config may still say bins=
            warnings.warn(
                "the entropy scorer's bins=... is deprecated: use "
                'entropy_bins=...',
                DeprecationWarning,
                stacklevel=2)
            entropy_bins = bins
        if isinstance(
                entropy_bins,
                bool) or not isinstance(entropy_bins, int) or entropy_bins < 1:
            raise ValueError(
                f'entropy_bins must be a positive int, got {entropy_bins!r}')
        self.entropy_bins = entropy_bins

    def score(self, gray: Tensor, patch_sizes: Sequence[int]) -> List[Tensor]:
        return entropy_maps(gray, patch_sizes, self.entropy_bins)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(entropy_bins={self.entropy_bins})'


@PATCH_SCORERS.register_module('contrast')
class ContrastScorer(PatchScorer):
    """Standard deviation of each patch's gray levels (gray levels).

    The RMS error of replacing the patch by its mean gray, so a patch scores
    by how badly one flat colour represents it: a sharp 0/200 edge scores
    100, gray noise of std 5 scores 5 (entropy would rank the noise higher).
    Computed in two passes (mean, then squared deviations), so flat patches
    score exactly 0 up to rounding of the mean.
    """
    _registered_name = 'contrast'
    unit = 'gray levels (std)'

    def score(self, gray: Tensor, patch_sizes: Sequence[int]) -> List[Tensor]:
        maps = []
        for size in patch_sizes:
            patches = _patches(gray.float(), size)
            mean = patches.mean(dim=(2, 4), keepdim=True)
            maps.append((patches - mean).square_().mean(dim=(2, 4)).sqrt_())
        return maps


@PATCH_SCORERS.register_module('gradient')
class GradientScorer(PatchScorer):
    """Mean absolute gray-level difference of neighbouring pixels inside each
    patch (horizontal and vertical pairs; gray levels).

    Total variation per pixel pair: edges and fine structure weighted by
    their contrast. Flat patches score 0 and gentle shading little (a
    horizontal ramp of g gray levels per pixel scores g / 2). Pairs that
    straddle two patches belong to neither, so a patch's score depends only
    on its own pixels (an edge exactly on a patch border lets both sides
    merge, losslessly).
    """
    _registered_name = 'gradient'
    unit = 'gray levels / px'

    def score(self, gray: Tensor, patch_sizes: Sequence[int]) -> List[Tensor]:
        maps = []
        for size in patch_sizes:
            if size < 2:
                raise ValueError('the gradient scorer needs patches of at '
                                 f'least 2 px, got {size}')
            patches = _patches(gray.float(), size)
            horizontal = patches.diff(dim=4).abs_().sum(dim=(2, 4))
            vertical = patches.diff(dim=2).abs_().sum(dim=(2, 4))
            maps.append((horizontal + vertical) / (2 * size * (size - 1)))
        return maps


@PATCH_SCORERS.register_module('importance')
class ImportanceScorer(PatchScorer):
    """A base scorer, raised or lowered per patch by a per-image map.

    The map (one per image, at the image's size, any finite values: a
    saliency model's output, rasterised boxes of a cheap first pass, a class
    prior) is reduced to one value per patch, ``m`` (its maximum by default:
    a patch is as important as its most important pixel, so a small object
    keeps the patch around it fine). Then, with ``s`` the base score:

    * ``combine='multiply'`` (default): ``score = s * max(0, 1 + alpha * m)``.
      ``m = 0`` leaves the score (and the meaning of the thresholds) as it
      is; ``m = 1`` with ``alpha = 1`` doubles it, so in important regions a
      threshold ``t`` acts like ``t / 2`` on the base score; ``m = -1 /
      alpha`` or lower scores 0 (always merged first). Flat patches stay flat
      (``s = 0``): importance never spends tokens on a region with nothing to
      resolve, which is why this is the default.
    * ``combine='add'``: ``score = s + alpha * m``, in the base score's unit.
      Important regions get finer patches even where they are flat (a class
      prior that wants uniform detail on its objects); scores may be
      negative.

    Args:
        base (dict | str | PatchScorer): The scorer modified. Defaults to
            ``'entropy'``.
        alpha (float): Strength, >= 0. Defaults to 1.
        combine (str): ``'multiply'`` or ``'add'``.
        reduce (str): Map -> patch value: ``'max'`` or ``'mean'``.
    """
    _registered_name = 'importance'

    def __init__(self,
                 base: Union[str, Mapping, PatchScorer] = 'entropy',
                 alpha: float = 1.0,
                 combine: str = 'multiply',
                 reduce: str = 'max') -> None:
        self.base = build_scorer(base)
        if isinstance(self.base, ImportanceScorer):
            raise ValueError('the importance scorer cannot wrap another '
                             'importance scorer: combine the maps instead')
        if isinstance(alpha, bool) or not isinstance(
                alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(
                f'importance alpha must be a finite number >= 0, got '
                f'{alpha!r} (lower importance with negative map values)')
        check_choice('importance combine', combine, ('multiply', 'add'))
        check_choice('importance reduce', reduce, ('max', 'mean'))
        self.alpha = float(alpha)
        self.combine = combine
        self.reduce = reduce
        self.unit = self.base.unit
        self.network = self.base.network
        self.min_score = self.base.min_score if combine == 'multiply' \
            else -math.inf

    def patch_importance(self, importance: Tensor,
                         patch_sizes: Sequence[int]) -> List[Tensor]:
        """(B, H, W) maps -> one (B, H // size, W // size) map per size."""
        pool = F.max_pool2d if self.reduce == 'max' else F.avg_pool2d
        return [pool(importance[:, None], size)[:, 0] for size in patch_sizes]

    @torch.no_grad()
    def __call__(self,
                 gray: Tensor,
                 patch_sizes: Sequence[int],
                 importance: Optional[Tensor] = None) -> List[Tensor]:
        _check_gray(gray, patch_sizes)
        if importance is None:
            raise missing_importance()
        importance = check_importance(importance, *gray.shape)
        maps = []
        for base, weight in zip(
                self.base(gray, patch_sizes),
                self.patch_importance(importance, patch_sizes)):
            if self.combine == 'multiply':
                factor = weight.mul_(self.alpha).add_(1.0).clamp_(min=0.0)
                maps.append(base * factor)
            else:
                maps.append(base + self.alpha * weight)
        return maps

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(base={self.base!r}, '
                f'alpha={self.alpha}, combine={self.combine!r}, '
                f'reduce={self.reduce!r})')


ScorerConfig = Union[None, str, Mapping, PatchScorer]


def build_scorer(cfg: ScorerConfig = None,
                 entropy_bins: Optional[int] = None) -> PatchScorer:
    """A scorer from a registered name, a config dict or an instance.

    Args:
        cfg (None | str | dict | PatchScorer): ``None`` = ``'entropy'``; a
            name of :data:`~mmapt.registry.PATCH_SCORERS`; a dict with
            ``type`` and the scorer's arguments; or a scorer, returned as is.
        entropy_bins (int, optional): Histogram bins for every entropy
            scorer in ``cfg`` (the importance scorer's base included) that
            does not set ``entropy_bins`` itself: the backbone's and
            tokenizer's.

    Returns:
        PatchScorer: The scorer.
    """
    if cfg is None:
        cfg = 'entropy'
    if isinstance(cfg, PatchScorer):
        return cfg
    if isinstance(cfg, str):
        cfg = dict(type=cfg)
    if not isinstance(cfg, Mapping) or 'type' not in cfg:
        raise ValueError(
            f'scorer must be a registered name ({", ".join(scorer_names())}), '
            f'a dict with a "type", or a PatchScorer; got {cfg!r}')
    args = dict(cfg)
    kind = args.pop('type')
    if isinstance(kind, type) and issubclass(kind, PatchScorer):
        cls = kind
    else:
        cls = PATCH_SCORERS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            raise ValueError(f'unknown patch scorer {kind!r}; registered '
                             f'scorers: {", ".join(scorer_names())}')
    if issubclass(cls, ImportanceScorer):
        args['base'] = build_scorer(args.get('base', 'entropy'), entropy_bins)
    if entropy_bins is not None and issubclass(cls, EntropyScorer):
        if 'bins' not in args:  # the deprecated spelling wins if given
            args.setdefault('entropy_bins', entropy_bins)
    try:
        return cls(**args)
    except TypeError as err:
        raise ValueError(f'patch scorer {kind!r}: {err}') from err
