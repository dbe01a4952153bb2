"""PatchTokenizer: images -> PatchLayout (entropy maps + quadtree
selection)."""
import math
import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .entropy import entropy_maps, images_to_gray
from .layout import PatchLayout, build_layout, select_patches

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

    Entropy of the gray-level histogram is computed for every patch of every
    scale above the base one; a coarse-to-fine quadtree keeps a large patch
    where its entropy is below the scale's threshold (see
    :func:`select_patches`), and the result is packed into a
    :class:`PatchLayout`.

    Args:
        patch_size (int): Base patch size in pixels. Defaults to 16.
        thresholds (Sequence[float]): One threshold per scale above the base,
            smallest first; ``len(thresholds) + 1`` scales in all.
            Defaults to the paper's detection setting (2, 2, 0.3).
        num_bins (int): Histogram bins over [0, 255]. Defaults to 512.
        mean (Sequence[float]): RGB mean the images were normalised with.
        std (Sequence[float]): RGB std the images were normalised with.
        window_size (int, optional): Window side in base cells, for window
            attention. Must be a multiple of the largest patch in cells.
        patch_sizes (Sequence[int], optional): Explicit patch sizes, checked
            against ``patch_size`` and ``thresholds``.
        num_prefix_tokens (int): Class / register tokens the backbone puts
            first in each image's packed slice (``PatchLayout``). Defaults
            to 0.
    """

    def __init__(self,
                 patch_size: int = 16,
                 thresholds: Sequence[float] = (2.0, 2.0, 0.3),
                 num_bins: int = 512,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD,
                 window_size: Optional[int] = None,
                 patch_sizes: Optional[Sequence[int]] = None,
                 num_prefix_tokens: int = 0) -> None:
        if not isinstance(patch_size, int) or patch_size < 1:
            raise ValueError(f'patch_size must be a positive int, got '
                             f'{patch_size!r}')
        if not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f'num_bins must be a positive int, got '
                             f'{num_bins!r}')
        if not isinstance(num_prefix_tokens, int) or num_prefix_tokens < 0:
            raise ValueError(f'num_prefix_tokens must be an int >= 0, got '
                             f'{num_prefix_tokens!r}')
        self.patch_size = patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.thresholds = check_thresholds(thresholds, patch_sizes, patch_size)
        self.num_bins = num_bins
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.num_scales = len(self.thresholds) + 1
        largest_cells = 2**(self.num_scales - 1)
        if window_size is not None and window_size != 0:
            if window_size < 0 or window_size % largest_cells:
                suggested = max(largest_cells,
                                window_size // largest_cells * largest_cells)
                raise ValueError(
                    f'window_size {window_size} (in {patch_size}-px cells) '
                    f'must be a multiple of the largest patch, '
                    f'{largest_cells} cells ({self.largest_patch} px), so no '
                    f'patch straddles two windows; e.g. window_size='
                    f'{suggested}')
            self.window_size: Optional[int] = window_size
        else:
            self.window_size = None

    @property
    def patch_sizes(self) -> Tuple[int, ...]:
        return tuple(self.patch_size * 2**i for i in range(self.num_scales))

    @property
    def largest_patch(self) -> int:
        return self.patch_sizes[-1]

    @property
    def can_merge(self) -> bool:
        """False when no threshold is positive: entropy is never negative, so
        no patch can merge and the entropy maps need not be computed."""
        return self.num_scales > 1 and max(self.thresholds) > 0

    def check_input_size(self, height: int, width: int) -> None:
        """Raise a ValueError naming the fix when H or W does not fit.

        Inputs must be a multiple of the largest patch; with windows they
        need not be a multiple of the window (windows at the bottom/right
        border are partial: padding-free inputs).
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

    @torch.no_grad()
    def entropy_maps(self, images: Tensor) -> list:
        """Entropy maps of the scales above the base one (smallest first)."""
        gray = images_to_gray(images, self.mean, self.std)
        return entropy_maps(gray, self.patch_sizes[1:], self.num_bins)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> PatchLayout:
        """Tokenize a batch of normalised images (B, 3, H, W)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError('images must have shape (B, 3, H, W), got '
                             f'{tuple(images.shape)}')
        height, width = images.shape[-2:]
        self.check_input_size(height, width)
        grid = (height // self.patch_size, width // self.patch_size)
        if self.can_merge:
            masks = select_patches(
                self.entropy_maps(images), self.thresholds, grid)
        else:  # "APT off" costs no tokenizer time: the plain grid.
            masks = [
                images.new_full((images.shape[0], grid[0] >> i, grid[1] >> i),
                                i == 0,
                                dtype=torch.bool)
                for i in range(self.num_scales)
            ]
        return build_layout(masks, grid, self.window_size,
                            self.num_prefix_tokens)

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(patch_sizes={self.patch_sizes}, '
                f'thresholds={self.thresholds}, num_bins={self.num_bins}, '
                f'window_size={self.window_size})')
