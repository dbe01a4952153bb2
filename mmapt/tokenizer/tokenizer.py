"""PatchTokenizer: images -> PatchLayout (score maps + quadtree selection,
by thresholds or by a token budget)."""
import math
import numbers
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .budget import (budget_patches, check_keep_ratio, check_token_budget,
                     fit_patches, min_tokens, resolve_budget)
from .entropy import ENTROPY_BINS, images_to_gray
from .layout import (PackSizeSpec, PatchLayout, build_layout, check_pack_size,
                     check_pack_size_spec, check_window_size, choose_pack_size,
                     default_pack_sizes, max_pack_size, round_up_pack_size,
                     select_patches)
from .scorers import (ImportanceScorer, PatchScorer, ScorerConfig,
                      build_scorer, check_importance, missing_importance)

# mmdet / mmseg data preprocessor defaults (ImageNet RGB statistics).
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


def check_thresholds(thresholds: Sequence[float],
                     patch_sizes: Optional[Sequence[int]] = None,
                     patch_size: Optional[int] = None) -> Tuple[float, ...]:
    """Validate APT thresholds (and optional explicit patch sizes).

    Args:
        thresholds (Sequence[float]): One entropy threshold per scale above
            the base one, from the second-smallest scale upward. ``-1`` means
            the scale never merges; other negative values are an error.
        patch_sizes (Sequence[int], optional): Explicit patch sizes; they must
            be ``patch_size * 2**i`` for i = 0..len(thresholds).
        patch_size (int, optional): The base patch size.

    Returns:
        tuple[float, ...]: The thresholds as floats.
    """
    expected_form = ('one number per patch scale above the base, e.g. '
                     '(2, 2, 0.3) for patch sizes 16/32/64/128; -1 disables '
                     'a scale')
    if isinstance(thresholds,
                  (str, bytes)) or not isinstance(thresholds, Sequence):
        raise ValueError(f'thresholds must be a sequence: {expected_form}; '
                         f'got {thresholds!r}')
    values = []
    for value in thresholds:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ValueError(f'thresholds must be numbers: {expected_form}; '
                             f'got {value!r} in {list(thresholds)!r}')
        if math.isnan(float(value)):
            raise ValueError(f'thresholds must not be NaN: {expected_form}')
        if value < 0 and value != -1:
            # Entropy is never negative, so any negative threshold disables
            # the scale; only -1 is that documented spelling.
            raise ValueError(
                f'threshold {value} in {list(thresholds)!r} is negative: '
                'write -1 to disable that scale (no patch of it merges) or '
                'use a value >= 0')
        values.append(float(value))
    if patch_sizes is not None:
        sizes = list(patch_sizes)
        base = patch_size if patch_size is not None else sizes[0]
        expected = [base * 2**i for i in range(len(sizes))]
        if sizes != expected:
            raise ValueError(f'patch sizes must be patch_size * 2**i '
                             f'({expected}), got {sizes}')
        if len(values) != len(sizes) - 1:
            need = len(sizes) - 1
            fewer = tuple(base * 2**i for i in range(len(values) + 1))
            raise ValueError(
                f'{len(sizes)} patch sizes {tuple(sizes)} need {need} '
                f'threshold{"s" if need != 1 else ""} (one per scale above '
                f'the base; -1 disables a scale), got {len(values)}: '
                f'{tuple(values)}; give {need} values, or set '
                f'model.backbone.patch_sizes={fewer} to use '
                f'{len(fewer)} scales')
    return tuple(values)


class PatchTokenizer:
    """Choose a patch size for every region of every image.

    A scorer (:mod:`~mmapt.tokenizer.scorers`; pixel entropy by default)
    scores every patch of every scale above the base one. Threshold mode
    keeps a large patch where its score is below the scale's threshold,
    coarse to fine (:func:`select_patches`); budget mode (``token_budget``
    or ``keep_ratio``) splits the highest-scoring patches first until the
    budget is spent (:func:`~mmapt.tokenizer.budget.budget_patches`). The
    result is packed into a :class:`PatchLayout`.

    Args:
        patch_size (int): Base patch size in pixels. Defaults to 16.
        thresholds (Sequence[float]): One threshold per scale above the base,
            smallest first; ``len(thresholds) + 1`` scales in all.
            Defaults to the paper's detection setting (2, 2, 0.3). In budget
            mode they only count the scales, unless ``threshold_floor``.
        entropy_bins (int): Histogram bins over [0, 255] of the entropy
            scorer (the default one, or an ``entropy`` scorer config without
            ``entropy_bins``). Defaults to :data:`~mmapt.tokenizer.entropy.
            ENTROPY_BINS`.
        mean (Sequence[float]): RGB mean the images were normalised with.
        std (Sequence[float]): RGB std the images were normalised with.
        window_size (int): Window side in base cells, for window
            attention; a multiple of the largest patch in cells. 0 (default)
            = no windows, as the hosts spell it.
        patch_sizes (Sequence[int], optional): Explicit patch sizes, checked
            against ``patch_size`` and ``thresholds``.
        num_prefix_tokens (int): Class / register tokens the backbone puts
            first in each image's packed slice (``PatchLayout``). Defaults
            to 0.
        pack_size (int | Sequence[int] | str, optional): Static-shape
            mode: every layout's packed sequence (prefix tokens included) is
            padded to a fixed number of tokens (see :func:`build_layout`):
            this int; or token buckets, the smallest of these sizes that
            holds the batch (one host read); or ``'auto'``
            (:meth:`auto_pack_sizes`: 25/50/75/100% of the canvas's tokens,
            one bucket holding the budget in budget mode). A batch that
            needs more than the (largest) size is capped to fit by score
            (:func:`~mmapt.tokenizer.budget.fit_patches`). Settable between
            calls. None (default): exact packing.
        scorer (str | dict | PatchScorer, optional): The patch scorer, a
            name or config of :data:`~mmapt.registry.PATCH_SCORERS`
            (``'entropy'``, ``'contrast'``, ``'gradient'``,
            ``dict(type='importance', base=..., alpha=...)``). None: entropy.
        token_budget (int, optional): Budget mode: content tokens per image
            (prefix tokens not counted); every image gets between
            ``token_budget - 2`` and ``token_budget``.
        keep_ratio (float, optional): Budget mode: a fraction in (0, 1] of
            the plain grid's tokens, ``floor(keep_ratio * cells)`` per image.
            At most one of ``token_budget`` and ``keep_ratio``.
        threshold_floor (bool): Budget mode only: the splits the thresholds
            make come first (thresholds as a floor of detail). Defaults to
            False (score order only).
    """

    def __init__(self,
                 patch_size: int = 16,
                 thresholds: Sequence[float] = (2.0, 2.0, 0.3),
                 entropy_bins: int = ENTROPY_BINS,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 window_size: int = 0,
                 patch_sizes: Optional[Sequence[int]] = None,
                 num_prefix_tokens: int = 0,
                 scorer: ScorerConfig = None,
                 token_budget: Optional[int] = None,
                 keep_ratio: Optional[float] = None,
                 threshold_floor: bool = False,
                 pack_size: Optional[int] = None) -> None:
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f'patch_size must be a positive int, got '
                             f'{patch_size!r}')
        if isinstance(
                entropy_bins,
                bool) or not isinstance(entropy_bins, int) or entropy_bins < 1:
            raise ValueError(f'entropy_bins must be a positive int, got '
                             f'{entropy_bins!r}')
        if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f'num_prefix_tokens must be an int >= 0, got '
                             f'{num_prefix_tokens!r}')
        self.patch_size = patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.pack_size = pack_size  # type: ignore[assignment]
        self.thresholds = check_thresholds(thresholds, patch_sizes, patch_size)
        self.entropy_bins = entropy_bins
        self.scorer: PatchScorer = build_scorer(scorer, entropy_bins)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.num_scales = len(self.thresholds) + 1
        self._init_budget(token_budget, keep_ratio, threshold_floor)
        self.window_size = check_window_size(window_size,
                                             2**(self.num_scales - 1),
                                             patch_size)

    def _init_budget(self, token_budget: Optional[int],
                     keep_ratio: Optional[float],
                     threshold_floor: bool) -> None:
        if token_budget is not None and keep_ratio is not None:
            raise ValueError(
                f'give token_budget ({token_budget}) or keep_ratio '
                f'({keep_ratio}), not both: both set the tokens per image')
        self.token_budget = None if token_budget is None else \
            check_token_budget(token_budget)
        self.keep_ratio = None if keep_ratio is None else \
            check_keep_ratio(keep_ratio)
        if threshold_floor and not self.budget_mode:
            raise ValueError('threshold_floor=True needs budget mode '
                             '(token_budget or keep_ratio): thresholds alone '
                             'are already the layout')
        if self.budget_mode and self.num_scales < 2:
            raise ValueError('budget mode needs at least one threshold (two '
                             'patch scales): with one scale the token count '
                             'is fixed')
        self.threshold_floor = bool(threshold_floor)

    @property
    def pack_size(self) -> PackSizeSpec:
        """The static-shape setting (see the class docstring)."""
        return self._pack_size

    @pack_size.setter
    def pack_size(self, value: PackSizeSpec) -> None:
        self._pack_size = check_pack_size_spec(value)

    def pack_sizes(self,
                   batch: int,
                   grid: Tuple[int, int],
                   budget: Optional[int] = None) -> Optional[Tuple[int, ...]]:
        """The static sizes in effect for a batch on ``grid``, ascending
        (None: exact packing). ``budget``: budget mode's tokens per image,
        if already resolved (:meth:`budget_for`)."""
        spec = self.pack_size
        if spec is None:
            return None
        if spec == 'auto':
            return self.auto_pack_sizes(batch, grid, budget)
        return (spec, ) if isinstance(spec, int) else tuple(spec)

    def auto_pack_sizes(self,
                        batch: int,
                        grid: Tuple[int, int],
                        budget: Optional[int] = None) -> tuple:
        """The ``'auto'`` buckets of a batch on ``grid``, ascending ints.
        Threshold mode:
        :func:`~mmapt.tokenizer.layout.default_pack_sizes` (25/50/75/100%).
        Budget mode: one bucket, :meth:`budget_packed_tokens` rounded up
        to a multiple of 64: every batch has that count, so a ladder would
        only pad it to the next rung (keep 0.77 would run the 100%
        bucket)."""
        fixed = self.budget_packed_tokens(batch, grid, budget)
        if fixed is None:
            return default_pack_sizes(batch, grid, self.num_prefix_tokens)
        return (min(
            round_up_pack_size(fixed),
            max_pack_size(batch, grid, self.num_prefix_tokens)), )

    def budget_packed_tokens(self,
                             batch: int,
                             grid: Tuple[int, int],
                             budget: Optional[int] = None) -> Optional[int]:
        """Budget mode: the packed tokens (prefix included) of every batch
        of ``batch`` images on ``grid``, known from the shapes alone (the
        coarsest cells plus 3 per split, :mod:`~mmapt.tokenizer.budget`);
        None in threshold mode. ``budget``: the tokens per image, if already
        resolved (:meth:`budget_for`); ValueError when it cannot be met."""
        if not self.budget_mode:
            return None
        if budget is None:
            budget = resolve_budget(grid, self.num_scales, self.patch_size,
                                    self.token_budget, self.keep_ratio,
                                    self.num_prefix_tokens)
        per_image = min_tokens(grid, self.num_scales) + \
            3 * self._budget_splits(grid, budget)
        return batch * (per_image + self.num_prefix_tokens)

    @property
    def patch_sizes(self) -> Tuple[int, ...]:
        return tuple(self.patch_size * 2**i for i in range(self.num_scales))

    @property
    def largest_patch(self) -> int:
        return self.patch_sizes[-1]

    @property
    def budget_mode(self) -> bool:
        """True when a token budget or keep ratio sets the token count."""
        return self.token_budget is not None or self.keep_ratio is not None

    @property
    def can_merge(self) -> bool:
        """Threshold mode: False when no threshold exceeds the scorer's
        lowest score (entropy, contrast and gradient are never negative), so
        no patch can merge and the score maps need not be computed."""
        return self.num_scales > 1 and \
            max(self.thresholds) > self.scorer.min_score

    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def budget_for(self, height: int, width: int) -> Optional[int]:
        """Content tokens per image of budget mode at this input size (None
        in threshold mode); ValueError when the budget cannot be met."""
        if not self.budget_mode:
            return None
        return resolve_budget(
            self.grid_size(height, width), self.num_scales, self.patch_size,
            self.token_budget, self.keep_ratio, self.num_prefix_tokens)

    def check_input_size(self, height: int, width: int) -> Optional[int]:
        """Raise a ValueError naming the fix when H or W does not fit;
        return :meth:`budget_for` of this size (resolved here, once).

        Inputs must be a multiple of the largest patch; with windows they
        need not be a multiple of the window (windows at the bottom/right
        border are partial: padding-free inputs). In budget mode the budget
        must reach the minimum token count of this size.
        """
        multiple = self.largest_patch
        if height % multiple or width % multiple:
            raise ValueError(
                f'image size {height}x{width} must be a multiple of '
                f'{multiple}, the largest patch ({self.largest_patch} px). '
                f'Pad the inputs: set pad_size_divisor={multiple} in the '
                f'mmdet DetDataPreprocessor, or size_divisor={multiple} (or '
                f'size=(H, W) multiples of it) in the mmseg '
                f'SegDataPreProcessor.')
        return self.budget_for(height, width)

    @torch.no_grad()
    def score_maps(self,
                   images: Tensor,
                   importance: Optional[Tensor] = None) -> List[Tensor]:
        """The scorer's maps of the scales above the base one (smallest
        first), each (B, H / size, W / size)."""
        gray = images_to_gray(images, self.mean, self.std)
        return self.scorer(gray, self.patch_sizes[1:], importance)

    def select(self,
               scores: Sequence[Tensor],
               grid: Tuple[int, int],
               budget: Optional[int] = None) -> List[Tensor]:
        """Score maps -> keep masks, by thresholds or by the budget
        (``budget``: the :meth:`budget_for` of this grid, if resolved)."""
        if not self.budget_mode:
            return select_patches(scores, self.thresholds, grid)
        if budget is None:
            budget = resolve_budget(grid, self.num_scales, self.patch_size,
                                    self.token_budget, self.keep_ratio,
                                    self.num_prefix_tokens)
        floor = self.thresholds if self.threshold_floor else None
        return budget_patches(scores, grid, budget, floor)

    def _uniform_masks(self, batch: int, grid: Tuple[int, int], scale: int,
                       device: torch.device) -> List[Tensor]:
        """Every cell covered by patches of one scale."""
        return [
            torch.full((batch, grid[0] >> i, grid[1] >> i),
                       i == scale,
                       dtype=torch.bool,
                       device=device) for i in range(self.num_scales)
        ]

    def _check_importance(self, images: Tensor,
                          importance: Optional[Tensor]) -> None:
        if importance is None:
            if isinstance(self.scorer, ImportanceScorer):
                raise missing_importance()
            return
        if not isinstance(self.scorer, ImportanceScorer):
            raise ValueError(
                f'an importance map was given but the scorer is '
                f'{self.scorer.name!r}: use scorer=dict(type=\'importance\', '
                f'base=dict(type={self.scorer.name!r})) to apply it')
        # Shape here; NaN / inf where the scorer reads the values.
        check_importance(
            importance, images.shape[0], *images.shape[2:], finite=False)

    @torch.no_grad()
    def choose_patches(
        self,
        images: Tensor,
        importance: Optional[Tensor] = None
    ) -> Tuple[List[Tensor], Optional[List[Tensor]]]:
        """Keep masks of a batch of normalised images (B, 3, H, W), by
        thresholds or by the budget, and the score maps they came from
        (None when no score was needed)."""
        return self._choose(images, importance,
                            self._check_images(images, importance))

    def _choose(
            self, images: Tensor, importance: Optional[Tensor],
            budget: Optional[int]
    ) -> Tuple[List[Tensor], Optional[List[Tensor]]]:
        """:meth:`choose_patches` of images already checked (``budget``:
        what the check resolved)."""
        height, width = images.shape[-2:]
        grid = self.grid_size(height, width)
        batch, device = images.shape[0], images.device
        if self.budget_mode:
            splits = self._budget_splits(grid, budget)
            if splits <= 0:  # the budget allows only the coarsest grid
                return self._uniform_masks(batch, grid, self.num_scales - 1,
                                           device), None
            if splits >= self._splittable(grid):
                return self._uniform_masks(batch, grid, 0, device), None
        elif not self.can_merge:
            # "APT off" costs no tokenizer time: the plain grid.
            return self._uniform_masks(batch, grid, 0, device), None
        scores = self.score_maps(images, importance)
        return self.select(scores, grid, budget), scores

    def _check_images(self, images: Tensor,
                      importance: Optional[Tensor]) -> Optional[int]:
        """Shape, size and importance checks; the budget of this size."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('images must have shape (B, 3, H, W), got '
                             f'{tuple(images.shape)}')
        budget = self.check_input_size(*images.shape[-2:])
        self._check_importance(images, importance)
        return budget

    def _splittable(self, grid: Tuple[int, int]) -> int:
        """Patches of an image that can be split (every scale above base)."""
        return sum(
            (grid[0] >> s) * (grid[1] >> s) for s in range(1, self.num_scales))

    def _budget_splits(self, grid: Tuple[int, int], budget: int) -> int:
        """Budget mode: the splits every image makes on ``grid`` with
        ``budget`` tokens per image."""
        splits = (budget - min_tokens(grid, self.num_scales)) // 3
        return max(0, min(splits, self._splittable(grid)))

    def packed_total(self, masks: Sequence[Tensor]) -> Tensor:
        """0-dim device tensor: the packed tokens of a layout's masks,
        prefix tokens included (no host read)."""
        batch = masks[0].shape[0]
        return sum(mask.sum() for mask in masks) + \
            batch * self.num_prefix_tokens

    @torch.no_grad()
    def select_pack_size(self,
                         images: Tensor,
                         importance: Optional[Tensor] = None,
                         buckets: Optional[Sequence[int]] = None,
                         masks: Optional[Sequence[Tensor]] = None) -> int:
        """The smallest bucket that holds the batch (the largest when none
        does); ``buckets`` default to :meth:`pack_sizes` (the ``'auto'``
        ones in exact mode). One host read of the packed total, none with a
        single bucket. ``masks``: the batch's :meth:`choose_patches` masks,
        if already made (the images are then not checked again)."""
        budget = self._check_images(images, importance) \
            if masks is None else None
        grid = self.grid_size(*images.shape[-2:])
        batch = images.shape[0]
        if buckets is None:
            buckets = self.pack_sizes(batch, grid, budget) or \
                self.auto_pack_sizes(batch, grid, budget)
        else:
            checked = check_pack_size_spec(
                buckets if isinstance(buckets, int) else list(buckets))
            buckets = (checked, ) if isinstance(checked, int) else checked
        if len(buckets) == 1:
            return buckets[0]
        if masks is None:
            masks = self._choose(images, importance, budget)[0]
        return choose_pack_size(int(self.packed_total(masks)), buckets)

    @torch.no_grad()
    def layout(
        self,
        images: Tensor,
        importance: Optional[Tensor] = None,
        pack_size: Optional[int] = None,
    ) -> PatchLayout:
        """The layout of a batch with ``pack_size`` fixed by the caller
        (None: exact packing), whatever :attr:`pack_size` says. A batch that
        needs more than ``pack_size`` tokens is capped to fit by score
        (:func:`~mmapt.tokenizer.budget.fit_patches`): the layout equals the
        uncapped one whenever that fits, ``layout.capped`` tells which."""
        budget = self._check_images(images, importance)
        return self._layout(images, importance, pack_size, budget)

    def _layout(
        self,
        images: Tensor,
        importance: Optional[Tensor],
        pack_size: Optional[int],
        budget: Optional[int],
        chosen: Optional[Tuple[List[Tensor], Optional[List[Tensor]]]] = None
    ) -> PatchLayout:
        """:meth:`layout` of images already checked (``budget``: what the
        check resolved); ``chosen``: their :meth:`_choose`, if made."""
        grid = self.grid_size(*images.shape[-2:])
        batch = images.shape[0]
        capped = None
        if pack_size is not None:
            check_pack_size(pack_size, batch, grid, self.num_scales,
                            self.num_prefix_tokens)
        if pack_size is not None and pack_size < max_pack_size(
                batch, grid, self.num_prefix_tokens):
            # A batch may need more than pack_size: the capped layout (the
            # wanted one whenever that fits), from the scores alone.
            scores = chosen[1] if chosen else None
            if scores is None:
                scores = self.score_maps(images, importance)
            floor = self.thresholds if self.threshold_floor or \
                not self.budget_mode else None
            splits = None
            if self.budget_mode:
                splits = self._budget_splits(grid, budget)
            masks, capped = fit_patches(
                scores, grid, pack_size - batch * self.num_prefix_tokens,
                floor, splits)
        else:
            masks = (chosen or self._choose(images, importance, budget))[0]
        layout = build_layout(masks, grid, self.window_size,
                              self.num_prefix_tokens, pack_size)
        layout.capped = capped
        return layout

    def __call__(self,
                 images: Tensor,
                 importance: Optional[Tensor] = None) -> PatchLayout:
        """Tokenize a batch of normalised images (B, 3, H, W) with the
        :attr:`pack_size` setting (token buckets: one host read to choose).

        Args:
            images (Tensor): Normalised RGB images.
            importance (Tensor, optional): (B, H, W) importance maps, for the
                ``importance`` scorer.
        """
        budget = self._check_images(images, importance)  # the one check
        chosen = self._choose(images, importance, budget)
        sizes = self.pack_sizes(images.shape[0],
                                self.grid_size(*images.shape[-2:]), budget)
        pack_size = None if sizes is None else self.select_pack_size(
            images, importance, sizes, chosen[0])
        return self._layout(images, importance, pack_size, budget, chosen)

    def __repr__(self) -> str:
        mode = f'thresholds={self.thresholds}'
        if self.token_budget is not None:
            mode += f', token_budget={self.token_budget}'
        if self.keep_ratio is not None:
            mode += f', keep_ratio={self.keep_ratio}'
        if self.threshold_floor:
            mode += ', threshold_floor=True'
        return (f'{self.__class__.__name__}(patch_sizes={self.patch_sizes}, '
                f'{mode}, scorer={self.scorer!r}, '
                f'window_size={self.window_size}, '
                f'pack_size={self.pack_size})')
