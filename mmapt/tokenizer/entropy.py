"""Per-patch Shannon entropy of grayscale pixel intensities.

APT scores every candidate patch by the entropy of its intensity histogram:
plain regions score low and may be covered by one large patch, busy regions
score high and keep base-size patches.
"""
from typing import List, Sequence

import torch
from torch import Tensor

from .layout import cached_constant

# ITU-R 601 luma weights, the ones the APT authors use.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
# Added inside the log like the authors do (only reached for empty bins there;
# we never evaluate empty bins, but keep it so values agree to the last digit).
_LOG_EPS = 1e-10
#: Histogram bins over [0, 255] of the entropy (the ``entropy_bins`` of
#: backbones, tokenizers and entropy scorers), the authors' 512.
ENTROPY_BINS = 512


def images_to_gray(images: Tensor, mean: Sequence[float],
                   std: Sequence[float]) -> Tensor:
    """Undo the data preprocessor's normalisation and convert to grayscale.

    Args:
        images (Tensor): Normalised RGB images, shape (B, 3, H, W).
        mean (Sequence[float]): Per-channel mean (RGB) in the 0-255 range.
        std (Sequence[float]): Per-channel std (RGB) in the 0-255 range.

    Returns:
        Tensor: Gray intensities in [0, 255], shape (B, H, W), float32.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError('images must have shape (B, 3, H, W), got '
                         f'{tuple(images.shape)}')
    if len(mean) != 3 or len(std) != 3:
        raise ValueError('mean and std need one value per RGB channel, got '
                         f'mean={list(mean)}, std={list(std)}')
    if images.requires_grad:
        images = images.detach()
    # gray = sum_c w_c * (x_c * std_c + mean_c), accumulated in place so the
    # only new buffer is one (B, H, W) float map.
    gray = images.select(1, 0).float() * (GRAY_WEIGHTS[0] * std[0])
    for channel in (1, 2):
        gray.add_(
            images.select(1, channel).float(),
            alpha=GRAY_WEIGHTS[channel] * std[channel])
    gray.add_(sum(w * m for w, m in zip(GRAY_WEIGHTS, mean)))
    return gray.clamp_(0.0, 255.0)


def intensity_bins(gray: Tensor, entropy_bins: int) -> Tensor:
    """Map intensities in [0, 255] to histogram bins of equal width.

    The last bin is closed (255 falls into bin ``entropy_bins - 1``), like
    ``numpy.histogram(x, bins=entropy_bins, range=(0, 255))``.
    """
    # int32 halves the memory of the per-pixel keys built from these bins.
    bins = (gray * (entropy_bins / 255.0)).to(torch.int32)
    return bins.clamp_(0, entropy_bins - 1)


def patch_entropy(gray: Tensor,
                  patch_size: int,
                  entropy_bins: int = ENTROPY_BINS) -> Tensor:
    """Shannon entropy (bits) of the intensity histogram of every patch.

    Memory grows with the number of pixels, never pixels x bins: each pixel
    gets one integer key ``patch * entropy_bins + bin`` and the histogram is
    either a ``bincount`` over all (patch, bin) pairs, when there are no more
    pairs than pixels, or a sort + run-length count otherwise.

    Args:
        gray (Tensor): Intensities in [0, 255], shape (B, H, W).
        patch_size (int): Patch side in pixels; must divide H and W.
        entropy_bins (int): Histogram bins over [0, 255]. Defaults to
            :data:`ENTROPY_BINS`.

    Returns:
        Tensor: Entropy per patch, shape (B, H // patch_size, W // patch_size),
        float32, in [0, log2(min(entropy_bins, patch_size**2))].
    """
    if gray.dim() != 3:
        raise ValueError(
            f'gray must have shape (B, H, W), got {tuple(gray.shape)}')
    if entropy_bins < 1:
        raise ValueError(
            f'entropy_bins must be a positive integer, got {entropy_bins}')
    batch, height, width = gray.shape
    if height % patch_size or width % patch_size:
        raise ValueError(
            f'image size {height}x{width} is not divisible by the '
            f'patch size {patch_size}')
    rows, cols = height // patch_size, width // patch_size
    num_patches = batch * rows * cols
    area = patch_size * patch_size

    # Patch id of every pixel, laid out so a (B, rows, ps, cols, ps) view
    # maps pixels to (b, r, c) without copying the image into patches.
    bins = intensity_bins(gray, entropy_bins).view(batch, rows, patch_size,
                                                   cols, patch_size)
    if num_patches * entropy_bins >= 2**31:
        raise ValueError(
            f'{num_patches} patches x {entropy_bins} bins overflow '
            'the int32 histogram keys; use fewer bins or images')
    patch_ids = torch.arange(
        num_patches, dtype=torch.int32,
        device=gray.device).view(batch, rows, 1, cols, 1)
    keys = bins.add_(patch_ids * entropy_bins).reshape(-1)

    if num_patches * entropy_bins <= keys.numel():
        # Few (patch, bin) pairs: a dense histogram is no larger than the
        # image.
        counts = torch.bincount(keys, minlength=num_patches * entropy_bins)
        del keys
        patch_of_count = None
    else:
        # More pairs than pixels: count only the pairs that occur.
        sorted_keys, _ = torch.sort(keys)
        del keys
        unique_keys, counts = torch.unique_consecutive(
            sorted_keys, return_counts=True)
        del sorted_keys
        patch_of_count = unique_keys.div_(entropy_bins, rounding_mode='floor')
    prob = counts.float().div_(area)
    del counts
    # -p log2 p, with p = 0 contributing nothing.
    neg_plogp = torch.where(prob > 0, prob * torch.log2(prob + _LOG_EPS),
                            prob).neg_()
    if patch_of_count is None:
        entropy = neg_plogp.view(num_patches, entropy_bins).sum(1)
    else:
        entropy = torch.zeros(num_patches, device=gray.device)
        entropy.index_add_(0, patch_of_count.long(), neg_plogp)
    return entropy.view(batch, rows, cols)


def entropy_maps(gray: Tensor,
                 patch_sizes: Sequence[int],
                 entropy_bins: int = ENTROPY_BINS) -> List[Tensor]:
    """Entropy maps of several patch sizes, equal to :func:`patch_entropy`
    of each size bit for bit.

    Histograms are additive: a parent patch's is the sum of its four
    children's. So the histograms are counted once, at the smallest size
    whose patches have at least ``entropy_bins`` pixels (where
    :func:`patch_entropy` uses dense histograms), summed into every larger
    size ``2**k`` times it, and the entropy of all of them is one pass.
    Other sizes (fewer pixels than bins, or off the doubling chain) fall
    back to :func:`patch_entropy`. Device-side ops only: no host reads.

    Args:
        gray (Tensor): Intensities in [0, 255], shape (B, H, W).
        patch_sizes (Sequence[int]): Patch sides in pixels, each dividing H
            and W.
        entropy_bins (int): Histogram bins over [0, 255]. Defaults to
            :data:`ENTROPY_BINS`.

    Returns:
        list[Tensor]: One (B, H // size, W // size) map per patch size.
    """
    dense = sorted(s for s in set(patch_sizes) if s * s >= entropy_bins)
    chain = []
    if dense:
        base = dense[0]
        chain = [
            s for s in dense
            if s % base == 0 and (s // base) & (s // base - 1) == 0
        ]
    if gray.dim() != 3 or len(chain) < 2 or \
            gray.shape[1] % chain[-1] or gray.shape[2] % chain[-1]:
        # Nothing to share (or an error patch_entropy explains).
        return [
            patch_entropy(gray, size, entropy_bins) for size in patch_sizes
        ]
    shared = dict(zip(chain, _chain_entropy(gray, chain, entropy_bins)))
    return [
        shared[size] if size in shared else patch_entropy(
            gray, size, entropy_bins) for size in patch_sizes
    ]


def _chain_entropy(gray: Tensor, sizes: List[int],
                   entropy_bins: int) -> List[Tensor]:
    """Entropy maps of ``sizes`` (ascending, each the first one times a
    power of two) from one histogram pass at the first size."""
    batch, height, width = gray.shape
    base = sizes[0]
    rows, cols = height // base, width // base
    num_patches = batch * rows * cols
    if num_patches * entropy_bins >= 2**31:
        raise ValueError(
            f'{num_patches} patches x {entropy_bins} bins overflow '
            'the int32 histogram keys; use fewer bins or images')
    device = gray.device
    key = (tuple(gray.shape), tuple(sizes), entropy_bins, str(device))
    first_key, areas = cached_constant(
        ('entropy', ) + key, lambda: _chain_constants(batch, rows, cols, sizes,
                                                      entropy_bins, device))
    bins = intensity_bins(gray, entropy_bins).view(batch, rows, base, cols,
                                                   base)
    keys = bins.add_(first_key).view(-1)
    # A scatter-add, not bincount: the same counts without the host read
    # of the largest key that bincount needs on CUDA.
    hist = torch.zeros(
        num_patches * entropy_bins, dtype=torch.int32,
        device=device).index_add_(0, keys, _ones(keys.numel(), device))
    del keys, bins
    levels = [hist.view(batch, rows, cols, entropy_bins)]
    for size in sizes[1:]:
        factor = size // (base << (len(levels) - 1))
        while factor > 1:  # one doubling at a time
            b, r, c, n = levels[-1].shape
            # Two single-dim sums: 40x faster on CPU than sum((2, 4)).
            levels.append(levels[-1].view(b, r // 2, 2, c // 2, 2, n).sum(
                4, dtype=torch.int32).sum(2, dtype=torch.int32))
            factor //= 2
    by_size = {base << i: level for i, level in enumerate(levels)}
    wanted = [by_size[size] for size in sizes]
    counts = torch.cat([level.view(-1, entropy_bins) for level in wanted])
    # Divided by each level's own patch area, like patch_entropy.
    prob = counts.float().div_(areas)
    neg_plogp = torch.where(prob > 0, prob * torch.log2(prob + _LOG_EPS),
                            prob).neg_()
    entropy = neg_plogp.sum(1)
    return [
        part.view(level.shape[:3]) for part, level in zip(
            entropy.split([w.numel() // entropy_bins for w in wanted]), wanted)
    ]


def _chain_constants(batch: int, rows: int, cols: int, sizes: List[int],
                     entropy_bins: int, device: torch.device) -> tuple:
    """First histogram key of every patch, as a (B, rows, 1, cols, 1) int32
    view over the pixels, and the (patches, 1) patch area of every row of
    the stacked histograms."""
    patch_ids = torch.arange(
        batch * rows * cols, dtype=torch.int32, device=device)
    first_key = (patch_ids * entropy_bins).view(batch, rows, 1, cols, 1)
    per_row = torch.tensor([
        batch * (rows * sizes[0] // size) * (cols * sizes[0] // size)
        for size in sizes
    ],
                           device=device)
    areas = torch.tensor([float(size * size) for size in sizes], device=device)
    areas = areas.repeat_interleave(per_row)[:, None]
    return first_key, areas


def _ones(numel: int, device: torch.device) -> Tensor:
    return cached_constant(
        ('ones', str(device)),
        lambda: torch.ones(1, dtype=torch.int32, device=device)).expand(numel)
